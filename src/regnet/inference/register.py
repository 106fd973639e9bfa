"""Single-shot registration: ``regnet.register(fixed, moving, model=...)``.

The result's DVF lives on the original fixed grid and maps fixed points into the moving image:
``moved(x) = moving(x + u(x))``. The network sees ``(moving, fixed)`` (docs/conventions.md).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from regnet.devices import pick_device
from regnet.errors import RegNetError
from regnet.geometry.jacobian import jacobian_determinant, jacobian_summary
from regnet.geometry.warp import warp_image
from regnet.inference.dense import predict_dense
from regnet.inference.models import LoadedModel, load_model
from regnet.io.atomic import write_text_atomic
from regnet.io.dvf import dvf_to_itk, itk_to_dvf, write_dvf
from regnet.io.images import (
    load_mask,
    read_image,
    resample_isotropic,
    resample_to_grid,
    same_grid,
    write_image,
)
from regnet.sampling.patches import normalize

log = logging.getLogger(__name__)


@dataclass
class RegistrationResult:
    """dvf_mm ``(D, H, W, 3)`` on ``fixed``'s grid (grid frame, mm); moved on the fixed grid."""

    dvf_mm: np.ndarray
    fixed: sitk.Image
    moving: sitk.Image
    moved: sitk.Image
    jacobian: np.ndarray
    summary: dict = field(default_factory=dict)

    def save(self, out: str | Path, report: bool = True, extra_rows=()) -> Path:
        """Write dvf.nii.gz, moved.nii.gz, summary.json (and report.png/html, with
        ``extra_rows`` as in :func:`~regnet.reporting.report.write_report`) into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_dvf(self.dvf_mm, self.fixed, out / "dvf.nii.gz")
        write_image(self.moved, out / "moved.nii.gz")
        if report:
            from regnet.reporting.report import write_report

            write_report(out, self.fixed, self.moving, self.moved, self.dvf_mm, self.jacobian,
                         self.summary, extra_rows)
        write_text_atomic(out / "summary.json", json.dumps(self.summary, indent=1))
        return out


def _as_image(image, dim=None) -> sitk.Image:
    if isinstance(image, sitk.Image):
        image = sitk.Cast(image, sitk.sitkFloat32)
        if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
            raise RegNetError("input image contains NaN or infinite voxels")
        return image
    return read_image(image, dim)


def _resample_dvf(dvf_mm: np.ndarray, grid: sitk.Image, target: sitk.Image) -> np.ndarray:
    """Linear resampling of a DVF from ``grid`` onto ``target`` (same direction)."""
    field_image = sitk.Resample(dvf_to_itk(dvf_mm, grid), target, sitk.Transform(),
                                sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    return itk_to_dvf(field_image)


def register(fixed, moving, model: str | Path | LoadedModel | None = None, device="auto",
             fixed_mask=None, tile: int = 40, phases: str = "one") -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` in one forward pass of the network.

    fixed, moving: paths or ``sitk.Image`` (2D or 3D, any grids). The moving image is resampled
    onto the fixed grid, both onto the model's isotropic spacing; the predicted DVF is brought
    back to the original fixed grid. ``model=None`` takes the shipped default for the images'
    dimension.
    """
    t0 = time.perf_counter()
    fixed_img, moving_img = _as_image(fixed), _as_image(moving)
    loaded = model if isinstance(model, LoadedModel) else load_model(
        model, dim=fixed_img.GetDimension())
    names = (fixed if not isinstance(fixed, sitk.Image) else "fixed",
             moving if not isinstance(moving, sitk.Image) else "moving")
    if fixed_img.GetDimension() != moving_img.GetDimension():
        raise RegNetError(f"{names[0]} is {fixed_img.GetDimension()}D but {names[1]} is "
                          f"{moving_img.GetDimension()}D; both must have the same dimension")
    dim = loaded.config.network.dim
    if fixed_img.GetDimension() != dim:
        raise RegNetError(f"{names[0]}: the model {loaded.source} is for {dim}D images, "
                          f"this image is {fixed_img.GetDimension()}D")
    mask = load_mask(fixed_mask, fixed_img) if fixed_mask is not None else None
    dev = pick_device(device) if isinstance(device, str) else device
    loaded.network.to(dev)
    fixed_iso = resample_isotropic(fixed_img, loaded.spacing_mm)
    background = float(sitk.GetArrayViewFromImage(moving_img).min())
    moving_iso = resample_to_grid(moving_img, fixed_iso, background)
    norm = loaded.config.sampling.normalization
    moving_arr = normalize(sitk.GetArrayFromImage(moving_iso), norm)
    fixed_arr = normalize(sitk.GetArrayFromImage(fixed_iso), norm)
    s = loaded.config.sampling
    t1 = time.perf_counter()
    dvf_iso = predict_dense(loaded.network, moving_arr, fixed_arr, dev,
                            multi=s.Resolution == "multi", tile=tile, phases=phases,
                            R=s.R, Rlow=s.Rlow)
    t_net = time.perf_counter() - t1
    dvf_mm = dvf_iso if same_grid(fixed_iso, fixed_img) else _resample_dvf(dvf_iso, fixed_iso,
                                                                           fixed_img)
    moved = warp_image(moving_img, dvf_mm, fixed_img, default=background)
    det = jacobian_determinant(dvf_mm, fixed_img.GetSpacing())
    stats = jacobian_summary(det, mask)
    if stats["jac_nonpositive_fraction"] > 0:
        log.warning("%.3f%% of voxels fold (Jacobian <= 0)",
                    100 * stats["jac_nonpositive_fraction"])
    summary = {"seconds_total": round(time.perf_counter() - t0, 3),
               "seconds_network": round(t_net, 3), "device": str(dev),
               "model": loaded.source, "model_spacing_mm": loaded.spacing_mm,
               "fixed_size_xyz": list(fixed_img.GetSize()),
               "dvf_max_abs_mm": float(np.abs(dvf_mm).max()), **stats}
    log.info("registered in %.2f s (network %.2f s on %s); Jacobian min %.3f, folding %.4f%%",
             summary["seconds_total"], t_net, dev, stats["jac_min"],
             100 * stats["jac_nonpositive_fraction"])
    return RegistrationResult(dvf_mm, fixed_img, moving_img, moved, det, summary)


def register_files(fixed, moving, out, model=None, fixed_mask=None, device="auto",
                   report=True) -> RegistrationResult:
    """The ``regnet register`` command: register and write the outputs into ``out``."""
    result = register(fixed, moving, model=model, device=device, fixed_mask=fixed_mask)
    result.summary.update({"fixed": str(fixed), "moving": str(moving)})
    result.save(out, report=report)
    return result
