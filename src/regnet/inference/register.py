"""Single-shot registration: ``regnet.register(fixed, moving, model=...)``.

The result's DVF lives on the original fixed grid and maps fixed points into the moving image:
``moved(x) = moving(x + u(x))``. The network sees ``(moving, fixed)`` (docs/conventions.md).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from regnet.devices import inference_dtype, pick_device
from regnet.errors import RegNetError, UsageError, fail
from regnet.geometry.compose import through_global
from regnet.geometry.faces import maps_inside
from regnet.geometry.invert import invert_and_check
from regnet.geometry.jacobian import jacobian_determinant, jacobian_summary
from regnet.geometry.warp import warp_image
from regnet.inference import trust
from regnet.inference.models import LoadedModel, choose_model, load_model
from regnet.inference.options import (
    DVF_FORMATS,
    TILE,
    TILE_LARGE,
    RegisterOptions,
    register_options,
)
from regnet.inference.stages import prealign, reports_as_dicts, run_stages
from regnet.intensity import PERCENTILE_SAMPLE, intensity_percentiles, normalize
from regnet.io.atomic import folder_lock, write_text_atomic
from regnet.io.dvf import resample_dvf, write_dvf, write_transform
from regnet.io.images import (
    check_geometry,
    check_not_constant,
    grid_of,
    load_mask,
    overlap_fraction,
    read_image,
    same_grid,
    write_image,
)
from regnet.reporting.report import write_report
from regnet.threads import map_in_threads
from regnet.timing import Stopwatch

log = logging.getLogger(__name__)


BYTES_PER_VOXEL = (200, 150)  # peak memory per voxel of the fixed grid and of the model grid
TILE_LARGE_EXTRA_GB = 1.0  # a tile of TILE_LARGE centres peaks 0.8 GB above one of TILE
BASE_GB = 2.0  # plus the interpreter and one full tile (79³ centres: 2.5 GB peak RSS in all)


@dataclass
class RegistrationResult:
    """dvf_mm ``(D, H, W, 3)`` on ``fixed``'s grid (grid frame, mm); moved on the fixed grid."""

    dvf_mm: np.ndarray
    fixed: sitk.Image
    moving: sitk.Image
    moved: sitk.Image
    jacobian: np.ndarray
    summary: dict = field(default_factory=dict)

    def save(self, out: str | Path, report: bool = True, extra_rows=(),
             dvf_format: str = "nii", inverse: bool = False, transform_out=None,
             mask: np.ndarray | None = None) -> Path:
        """Write ``dvf.<fmt>``, ``moved.<fmt>``, summary.json (and report.png/html, with
        ``extra_rows`` as in :func:`~regnet.reporting.report.write_report`) into ``out``;
        with ``inverse`` also ``inverse_dvf.<fmt>`` on the moving grid and its consistency
        (inside ``mask`` of the fixed grid) in the summary; with ``transform_out`` the field
        as an ITK transform file there. The field, the moved image and the report are written
        in threads at once (SimpleITK's writers release the GIL); each one's seconds join the
        summary's ``seconds_parts`` as "write" or "report", and their wall time as "write and
        report (wall)". summary.json comes last: a folder with it holds a complete result."""
        if dvf_format not in DVF_FORMATS:
            raise UsageError(f"--dvf-format {dvf_format!r}: choose one of {DVF_FORMATS}")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").unlink(missing_ok=True)
        watch = Stopwatch()
        if inverse:
            with watch("inverse"):
                moving_grid = grid_of(self.moving)
                inverse_mm, consistency = invert_and_check(self.dvf_mm, self.fixed,
                                                           moving_grid, mask)
                write_dvf(inverse_mm, moving_grid, out / f"inverse_dvf.{dvf_format}")
            self.summary["inverse_consistency"] = consistency
        if transform_out is not None:
            with watch("write"):
                write_transform(self.dvf_mm, self.fixed, transform_out)
        jobs = [("write", write_dvf, (self.dvf_mm, self.fixed, out / f"dvf.{dvf_format}")),
                ("write", write_image, (self.moved, out / f"moved.{dvf_format}"))]
        if report:
            jobs.append(("report", write_report, (out, self.fixed, self.moving, self.moved,
                                                  self.dvf_mm, self.jacobian, self.summary,
                                                  extra_rows)))
        with watch("write and report (wall)"):
            for part, seconds in map_in_threads(_timed, jobs):
                watch.add(part, seconds)
        self.summary.setdefault("seconds_parts", {}).update(watch.rounded())
        write_text_atomic(out / "summary.json", json.dumps(self.summary, indent=1))
        return out


def _as_image(image, name: str, series=None) -> sitk.Image:
    if isinstance(image, sitk.Image):
        image = sitk.Cast(image, sitk.sitkFloat32)
        check_geometry(image, name)
        if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
            raise fail(name, "contains NaN or infinite voxels")
    else:
        image = read_image(image, series=series)
    check_not_constant(image, name)
    return image


def available_memory_gb() -> float | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def check_memory(fixed: sitk.Image, spacing_mm: float, limit_gb: float | None, name) -> float:
    """Estimated peak memory (GB) of registering onto ``fixed``; raise above ``limit_gb``
    (default: the memory available now). The estimate is linear in the voxel counts of the
    fixed grid and of the model-spacing grid, fitted to measured peaks."""
    n_fixed = float(np.prod(fixed.GetSize()))
    n_model = float(np.prod(np.asarray(fixed.GetSize()) * np.asarray(fixed.GetSpacing())
                            / spacing_mm))
    need_gb = (BYTES_PER_VOXEL[0] * n_fixed + BYTES_PER_VOXEL[1] * n_model) / 2**30 + BASE_GB
    limit = available_memory_gb() if limit_gb is None else limit_gb
    if limit is not None and need_gb > limit:
        raise fail(name, f"too big for the memory limit: registering {fixed.GetSize()} voxels "
                   f"needs about {need_gb:.1f} GB, {limit:.1f} GB "
                   f"{'allowed (--max-memory-gb)' if limit_gb is not None else 'available'}; "
                   "crop or downsample the images")
    return need_gb


def pick_tile(need_gb: float, limit_gb: float | None = None) -> int:
    """``TILE_LARGE`` centres per tile side where the memory allowed (``limit_gb``, else
    the memory available now) exceeds the job's estimate ``need_gb`` by
    ``TILE_LARGE_EXTRA_GB``, else ``TILE``."""
    limit = available_memory_gb() if limit_gb is None else limit_gb
    return TILE_LARGE if limit is not None and limit - need_gb >= TILE_LARGE_EXTRA_GB else TILE


def register(fixed, moving, model: str | Path | LoadedModel | None = None,
             options: RegisterOptions | None = None, device="auto", fixed_mask=None,
             **option_values) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` in one forward pass of the network per stage.

    fixed, moving: paths or ``sitk.Image`` (2D or 3D, any grids). The moving image is resampled
    onto the fixed grid, both onto the model's isotropic spacing; the predicted DVF is brought
    back to the original fixed grid. ``model=None`` takes the shipped default that suits the
    images (:func:`regnet.inference.models.choose_model`, logged). ``options``: a
    :class:`~regnet.inference.options.RegisterOptions`, or its fields by name in
    ``option_values`` (``smooth_vox=0``); the stages are :func:`regnet.inference.stages.
    run_stages`. ``fixed_mask``: the voxels whose Jacobian statistics are reported. The
    summary's ``warnings`` list the trust signals of :mod:`regnet.inference.trust`;
    ``seconds_parts`` says where the time went.

    The steps: read, choose and load the model, check, pre-align, run the stages, bring the
    field onto the fixed grid, warp, Jacobian, trust signals.
    """
    options = register_options(options, **option_values)
    watch = Stopwatch()
    t0 = time.perf_counter()
    with watch("read"):
        fixed_img, moving_img, names = _read_pair(fixed, moving, options.series)
    with watch("model"):
        loaded, choice_warning = _load(model, fixed_img, moving_img, names[0])
    options = options.checked(loaded.config.network.dim, loaded.own, loaded.presets)
    with watch("checks"):
        overlap, need_gb = _check_pair(fixed_img, moving_img, names, loaded, options)
        if options.tile is None:
            options = replace(options, tile=pick_tile(need_gb, options.max_memory_gb))
        mask = load_mask(fixed_mask, fixed_img) if fixed_mask is not None else None
    dev = pick_device(device) if isinstance(device, str) else device
    for stage_model in loaded.stages or [loaded]:
        stage_model.network.to(dev)
    background = float(sitk.GetArrayViewFromImage(moving_img).min())
    with watch("prealign"):
        transform = prealign(fixed_img, moving_img, options.prealign_kind)
    t_stages = time.perf_counter()
    u_mm, grid, reports = run_stages(fixed_img, moving_img, loaded, dev, options, background,
                                     transform, watch)
    t_stages = time.perf_counter() - t_stages
    watch.add("stages (around the network)", t_stages - watch.seconds.get("network", 0.0))
    with watch("to the fixed grid"):
        beyond = 1.0 - float(maps_inside(through_global(u_mm, grid, transform), grid,
                                         moving_img).mean())
        dvf_mm = u_mm if same_grid(grid, fixed_img) else resample_dvf(u_mm, grid, fixed_img)
        dvf_mm = through_global(dvf_mm, fixed_img, transform)
    with watch("warp"):
        moved = warp_image(moving_img, dvf_mm, fixed_img, default=background)
    with watch("jacobian"):
        det = jacobian_determinant(dvf_mm, fixed_img.GetSpacing())
        stats = jacobian_summary(det, mask)
    with watch("trust"):
        warnings = _warnings(fixed_img, moving_img, loaded, reports, stats, beyond, overlap,
                             transform, choice_warning)
    for warning in warnings:
        log.warning("%s", warning)
    summary = {"seconds_total": round(time.perf_counter() - t0, 3),
               "seconds_network": round(t_stages, 3), "seconds_parts": watch.rounded(),
               "device": str(dev),
               "model": loaded.source, "model_spacing_mm": loaded.spacing_mm,
               "fixed_size_xyz": list(fixed_img.GetSize()),
               "dvf_max_abs_mm": float(np.abs(dvf_mm).max()),
               "model_trained_range_mm": loaded.trained_range_mm, **stats,
               "beyond_moving_fraction": round(beyond, 4),
               "prealign": options.prealign_kind, "preset": options.preset,
               "smooth_vox": options.smooth_vox,
               "chain": options.chain, "flips": options.flips,
               "flips_min_mm": options.flips_min_mm, "drop_stages": list(options.drop_stages),
               "tile": options.tile,
               "precision": str(inference_dtype(dev, options.precision) or torch.float32
                                ).removeprefix("torch."),
               "unfold": options.unfold_field and options.smooth_vox > 0,
               "stages": reports_as_dicts(reports),
               "trusted": not warnings, "warnings": warnings}
    log.info("registered in %.2f s (network and stages %.2f s on %s); Jacobian min %.3f, "
             "folding %.4f%%", summary["seconds_total"], t_stages, dev, stats["jac_min"],
             100 * stats["jac_nonpositive_fraction"])
    return RegistrationResult(dvf_mm, fixed_img, moving_img, moved, det, summary)


def _timed(job: tuple) -> tuple[str, float]:
    """Run ``(part, function, args)``; return ``(part, its seconds)``."""
    part, function, args = job
    t0 = time.perf_counter()
    function(*args)
    return part, time.perf_counter() - t0


def _read_pair(fixed, moving, series) -> tuple[sitk.Image, sitk.Image, tuple[str, str]]:
    """Both images as float32 ``sitk.Image`` and the names that errors give them."""
    names = (fixed if not isinstance(fixed, sitk.Image) else "fixed",
             moving if not isinstance(moving, sitk.Image) else "moving")
    fixed_img = _as_image(fixed, names[0], series)
    moving_img = _as_image(moving, names[1], series)
    if fixed_img.GetDimension() != moving_img.GetDimension():
        raise RegNetError(f"{names[0]} is {fixed_img.GetDimension()}D but {names[1]} is "
                          f"{moving_img.GetDimension()}D; both must have the same dimension")
    return fixed_img, moving_img, names


def _load(model, fixed_img: sitk.Image, moving_img: sitk.Image, name
          ) -> tuple[LoadedModel, str | None]:
    """The model asked for, or the shipped default for these images (with a warning when the
    images' modality does not suit it); raise when its dimension is not the images'."""
    choice_warning = None
    if model is None:
        model, why, choice_warning = choose_model(fixed_img, moving_img)
        log.info("model %s (no --model given): %s", model, why)
    loaded = model if isinstance(model, LoadedModel) else load_model(
        model, dim=fixed_img.GetDimension())
    dim = loaded.config.network.dim
    if fixed_img.GetDimension() != dim:
        raise RegNetError(f"{name}: the model {loaded.source} is for {dim}D images, "
                          f"this image is {fixed_img.GetDimension()}D")
    return loaded, choice_warning


def _check_pair(fixed_img, moving_img, names, loaded: LoadedModel,
                options: RegisterOptions) -> float:
    """Raise when the images do not overlap (and nothing pre-aligns them) or the job needs
    more memory than allowed; return the overlap fraction and the memory needed (GB)."""
    overlap = overlap_fraction(fixed_img, moving_img)
    if overlap == 0 and options.prealign_kind == "none":
        raise RegNetError(f"{names[1]} does not overlap {names[0]} in physical space (moving "
                          f"origin {np.round(moving_img.GetOrigin(), 1).tolist()} mm, fixed "
                          f"origin {np.round(fixed_img.GetOrigin(), 1).tolist()} mm); check "
                          "the headers or pre-align the images")
    finest_mm = min(options.stages or [m.stage_spacing_mm for m in loaded.stages or [loaded]])
    return overlap, check_memory(fixed_img, finest_mm, options.max_memory_gb, names[0])


def _warnings(fixed_img, moving_img, loaded: LoadedModel, reports, stats, beyond, overlap,
              transform, choice_warning) -> list[str]:
    """The trust signals of one result (:mod:`regnet.inference.trust`)."""
    norm = loaded.config.sampling.normalization
    reference = loaded.intensity_p1_p99 if norm == "ct" else None

    def intensity_warning(name, image):  # only CT models carry a reference to compare with
        if reference is None:
            return None
        voxels = sitk.GetArrayViewFromImage(image).ravel()
        # the ct normalisation is per voxel: normalise intensity_percentiles' subsample only
        values = normalize(voxels[:: max(1, voxels.size // PERCENTILE_SAMPLE)], norm)
        return trust.intensity_warning(name, intensity_percentiles(values), reference)

    return trust.collect(
        trust.folding_warning(stats["jac_nonpositive_fraction"]),
        trust.range_warning(reports[0].max_model_mm, reports[0].trained_range_mm),
        intensity_warning("fixed", fixed_img),
        intensity_warning("moving", moving_img),
        choice_warning,
        trust.extent_warning(fixed_img, moving_img),
        trust.beyond_warning(beyond),
        trust.contrast_warning(reports[0].ncc_before),
        None if overlap >= 0.5 or transform is not None else
        f"overlap: the moving image covers only {100 * overlap:.0f}% of the fixed image's "
        "extent",
        None if any(r.kept for r in reports) else
        "stages: every stage was dropped by the guard; the result is the identity"
        + (" after pre-alignment" if transform is not None else ""))


def register_files(fixed, moving, out, model=None, fixed_mask=None, device="auto",
                   report=True, dvf_format="nii", inverse=False, transform_out=None,
                   options: RegisterOptions | None = None,
                   **option_values) -> RegistrationResult:
    """The ``regnet register`` command: register (``options`` as in :func:`register`) and
    write the outputs into ``out`` (:meth:`RegistrationResult.save`), holding a lock on ``out``
    so that two runs never write into one folder at once."""
    out = Path(out)
    with folder_lock(out, "regnet register"):
        result = register(fixed, moving, model=model, options=options, device=device,
                          fixed_mask=fixed_mask, **option_values)
        result.summary.update({"fixed": str(fixed), "moving": str(moving)})
        mask = load_mask(fixed_mask, result.fixed) if fixed_mask is not None else None
        result.save(out, report=report, dvf_format=dvf_format, inverse=inverse,
                    transform_out=transform_out, mask=mask)
    return result
