"""Coarse-to-fine stages, still one shot: a multi-stage model's own networks, each at the
spacing it was trained at, or one network applied at several isotropic spacings.

Stage k resamples the fixed image to ``spacing_k`` mm and the moving image through the field
found so far, shows both to the stage's network as if they were at its training spacing (a
network sees voxels), scales its prediction by ``spacing_k / training spacing`` (1 for a
multi-stage model's own stages) and composes it with the field so far:
``u <- r + u(x + r)`` (:func:`regnet.geometry.compose.compose_dvfs`). A coarse stage sees a
wider neighbourhood in mm and so recovers larger motion; the finest stage refines.

The guard: a stage is kept only when it raises the magnitude of the normalised
cross-correlation (NCC) between the fixed and the warped moving image on its own grid. (The
magnitude: where the images' contrasts are inverted, say a T1 against a T2 image, the NCC is
negative, and a network that scrambles the moving image takes it towards 0.) A network that
does not understand the images (say a CT model on brain MR) then cannot compound its errors
over the stages, and a result is never worse than identity by this measure. ``chain="auto"``
judges the coarser stages by the outcome instead: the chain's result on the finest grid
against the finest stage alone, or against the identity (:func:`run_stages`). Each stage's
NCC before and after and whether it was kept go into the summary.

An optional global pre-alignment ``A`` (rigid or affine, SimpleITK's multi-resolution
registration on a coarse grid) comes first: the stages then register the fixed image to
``moving(A(x))`` and the written field is that of ``x -> A(x + u(x))``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
import torch
from scipy.ndimage import gaussian_filter

from regnet.devices import inference_dtype
from regnet.errors import UsageError
from regnet.geometry.compose import compose_dvfs, through_global
from regnet.geometry.faces import fade_at_faces
from regnet.geometry.jacobian import unfold
from regnet.geometry.warp import warp_image
from regnet.inference.dense import predict_field
from regnet.inference.models import LoadedModel
from regnet.inference.options import PREALIGN, TILE, RegisterOptions
from regnet.intensity import normalize
from regnet.io.dvf import resample_dvf
from regnet.io.images import resample_isotropic
from regnet.threads import map_in_threads
from regnet.timing import Stopwatch

log = logging.getLogger(__name__)
COMPOSED_SMOOTH_VOX = 2.0  # Gaussian sigma (finest-stage voxels) on a composed field
SPARSE_MAX_MM = 8.0  # phases="sparse" only where its centres are at most this far apart
FLIPS_MAX_MM = 4.0  # flips > 1 only at stages of at most this spacing


@dataclass
class StageReport:
    spacing_mm: float
    kept: bool
    ncc_before: float
    ncc_after: float
    max_abs_mm: float
    size_xyz: tuple
    max_model_mm: float  # the largest component in the stage model's own units (its spacing)
    trained_range_mm: float  # what that model was trained on (classBalanced[-1])
    seconds: float = 0.0  # resampling, prediction, composition and the guard's check
    network_seconds: float = 0.0  # of which the network's forward passes


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two arrays of one shape (1 for a perfect linear match)."""
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / max(np.sqrt((a @ a) * (b @ b)), 1e-12))


def prealign(fixed: sitk.Image, moving: sitk.Image, kind: str, spacing_mm: float = 4.0,
             seed: int = 0) -> sitk.Transform | None:
    """A global transform mapping fixed points into moving (physical mm), or None for 'none'.

    Mattes mutual information (modality-robust), regular-step gradient descent, shrink factors
    2 and 1 on images resampled to ``spacing_mm``; rigid starts from the images' centres,
    affine from the rigid result.
    """
    if kind not in PREALIGN:
        raise UsageError(f"--prealign {kind}: choose one of {PREALIGN}")
    if kind == "none":
        return None
    fixed_c = resample_isotropic(fixed, max(spacing_mm, min(fixed.GetSpacing())))
    moving_c = resample_isotropic(moving, max(spacing_mm, min(moving.GetSpacing())))
    euler = sitk.Euler3DTransform() if fixed.GetDimension() == 3 else sitk.Euler2DTransform()
    transform = sitk.CenteredTransformInitializer(
        fixed_c, moving_c, euler, sitk.CenteredTransformInitializerFilter.GEOMETRY)
    kinds = ["rigid"] + (["affine"] if kind == "affine" else [])
    for step in kinds:
        if step == "affine":
            affine = sitk.AffineTransform(fixed.GetDimension())
            affine.SetMatrix(transform.GetMatrix())
            affine.SetTranslation(transform.GetTranslation())
            affine.SetCenter(transform.GetCenter())
            transform = affine
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(0.25, seed)
        method.SetInterpolator(sitk.sitkLinear)
        method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3,
                                                        numberOfIterations=200)
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetShrinkFactorsPerLevel([2, 1])
        method.SetSmoothingSigmasPerLevel([1.0, 0.0])
        method.SetInitialTransform(transform, inPlace=True)
        method.Execute(fixed_c, moving_c)
        log.info("pre-alignment (%s): metric %.4f after %d iterations", step,
                 method.GetMetricValue(), method.GetOptimizerIteration())
    return transform


def stage_plan(loaded: LoadedModel, spacings_mm=None, drop=()
               ) -> list[tuple[float, LoadedModel]]:
    """``[(spacing_mm, stage model)]`` coarse to fine: a multi-stage model's own stages but
    those whose index is in ``drop`` (or those of them at ``spacings_mm``), else the one
    network at each of ``spacings_mm`` (default: its own spacing)."""
    drop = tuple(drop or ())
    if drop and not loaded.stages:
        raise UsageError(f"drop_stages {list(drop)}: {loaded.source} has one stage")
    if loaded.stages:
        if drop and (max(drop) >= len(loaded.stages) or min(drop) < 0
                     or len(set(drop)) >= len(loaded.stages)):
            raise UsageError(f"drop_stages {list(drop)}: the multi-stage model {loaded.source} "
                             f"has stages 0..{len(loaded.stages) - 1}, and one must stay")
        own = [(m.stage_spacing_mm, m) for k, m in enumerate(loaded.stages) if k not in drop]
        if spacings_mm is None:
            return own
        wanted, present = set(spacings_mm), {s for s, _ in own}
        if wanted - present:
            raise UsageError(f"--stages {sorted(wanted - present)}: the multi-stage model "
                             f"{loaded.source} has stages at {sorted(present, reverse=True)} mm "
                             "only")
        return [(s, m) for s, m in own if s in wanted]
    return [(s, loaded) for s in sorted(spacings_mm or [loaded.spacing_mm], reverse=True)]


@dataclass(frozen=True)
class _Run:
    """What every stage of one registration shares."""

    fixed: sitk.Image
    moving: sitk.Image
    device: object
    background: float
    global_transform: sitk.Transform | None
    options: RegisterOptions
    dtype: torch.dtype | None  # the network's arithmetic (None: float32)
    watch: Stopwatch  # the network's seconds, every pass counted (kept or not)
    cache: dict = dataclasses.field(default_factory=dict, compare=False)

    def fixed_on(self, spacing_mm: float, norm: str) -> tuple[sitk.Image, np.ndarray]:
        """The fixed image resampled to ``spacing_mm`` and its array normalised by ``norm``,
        made once per registration (stages and the chain's judge share them)."""
        key = (float(spacing_mm), norm)
        if key not in self.cache:
            grid = resample_isotropic(self.fixed, spacing_mm)
            self.cache[key] = grid, normalize(sitk.GetArrayViewFromImage(grid), norm)
        return self.cache[key]

    def warped(self, u: np.ndarray, grid: sitk.Image, norm: str) -> np.ndarray:
        """The moving image warped by the field ``u`` onto ``grid`` and normalised, made once
        per field: a stage's check, the next stage's input and the chain's judge share it.
        Fields are never changed in place while the stages run, so one is known by identity;
        the few most recent are kept."""
        memo = self.cache.setdefault("warped", {})
        hit = memo.get(id(u))
        if hit is not None and hit[0] is u and hit[1] is grid and hit[2] == norm:
            return hit[3]
        seen = through_global(u, grid, self.global_transform)
        array = normalize(sitk.GetArrayFromImage(
            warp_image(self.moving, seen, grid, default=self.background)), norm)
        memo[id(u)] = (u, grid, norm, array)
        while len(memo) > 4:
            memo.pop(next(iter(memo)))
        return array


def run_stages(fixed: sitk.Image, moving: sitk.Image, loaded: LoadedModel, device,
               options: RegisterOptions, background: float = 0.0,
               global_transform: sitk.Transform | None = None, watch: Stopwatch | None = None
               ) -> tuple[np.ndarray, sitk.Image, list[StageReport]]:
    """Run the stages coarse to fine (:func:`stage_plan` of ``options.stages``); return ``(u_mm,
    grid, reports)`` with ``u`` the field found after the global transform, on the finest
    stage's grid (grid frame, mm). ``options`` are checked already
    (:meth:`RegisterOptions.checked`); ``watch`` (a :class:`~regnet.timing.Stopwatch`) gets the
    seconds of every network pass as ``"network"``. ``smooth_vox``: Gaussian sigma (voxels of
    each stage's grid) applied to every stage's residual (it lowers a dense network's error
    as it does the seed network's: docs/training.md); ``unfold_field``: where several stages
    were kept, smooth their composed field (``COMPOSED_SMOOTH_VOX``), then smooth it locally
    wherever it still folds (:func:`regnet.geometry.jacobian.unfold`, up to 30 passes;
    measurements in benchmarks/README.md, "Measurements behind the defaults").

    ``chain``: ``always`` runs every stage, each judged by the guard on its own step. ``auto``
    (for a multi-stage model's own stages) judges outcomes instead. It runs the coarser stages
    unguarded, then the first stage at the finest spacing after them; it also runs that stage
    alone, and keeps whichever result has the larger |NCC| on the finest grid (both logged).
    Then it runs any refinement stage (a later stage at the finest spacing) once, on the field
    kept. A coarse stage may lower the similarity on its own grid and still bring the finest
    stage within reach of large motion; on small motion the finest stage alone can be better.
    When the coarser stages' field reaches beyond the range the finest stage was trained on
    (99th percentile of ``|u|``), that stage alone could not recover such motion; the chain's
    result is then compared with the identity instead, one pass fewer. (The NCC over the
    whole grid is a poor judge between the two: on the demo's 25 mm breathing phantom it
    preferred the finest stage alone, 11.8 mm, to the chain, 1.0 mm.) Either way the result
    is never worse than the identity by this NCC.

    ``flips``: mirrored passes averaged (:func:`regnet.inference.dense.predict_field`) at each
    stage of at most ``FLIPS_MAX_MM``; coarser stages run once."""
    run = _Run(fixed, moving, device, background, global_transform, options,
               inference_dtype(torch.device(device), options.precision), watch or Stopwatch())
    plan = stage_plan(loaded, options.stages, options.drop_stages)
    first = next(i for i, (spacing, _) in enumerate(plan) if spacing == plan[-1][0])
    if options.chain == "always" or first == 0 or options.stages is not None:
        u, grid, reports = _run_plan(plan, run)
    else:
        coarse = _run_plan(plan[:first], run, guarded=False)
        full = _run_plan(plan[first:first + 1], run, start=coarse)
        trained = plan[first][1].trained_range_mm
        reach = float(np.percentile(np.linalg.norm(coarse[0], axis=-1), 99))
        if reach > trained:
            log.info("the coarser stages' field reaches %.1f mm (99th percentile of |u|), beyond "
                     "the finest stage's trained %g mm: compared with the identity, not with "
                     "that stage alone", reach, trained)
            other, name = (np.zeros_like(full[0]), full[1],
                           [dataclasses.replace(r, kept=False) for r in full[2]]), "identity"
        else:
            other, name = _run_plan(plan[first:first + 1], run), "the finest stage alone"
        norm = plan[first][1].config.sampling.normalization
        scores = [_final_ncc(run, u, grid, norm) for u, grid, _ in (other, full)]
        better = abs(scores[1]) > abs(scores[0])
        log.info("NCC %.4f with %s, %.4f after the coarser stages: keeping %s", scores[0],
                 name, scores[1], "the coarser stages" if better else name)
        full = full if better else other
        u, grid, reports = full
        if first + 1 < len(plan):
            u, grid, reports = _run_plan(plan[first + 1:], run, start=(u, grid, reports))
    return _finish(u, grid, reports, run)


def _final_ncc(run: _Run, u, grid, norm) -> float:
    _, fixed_arr = run.fixed_on(grid.GetSpacing()[0], norm)
    return ncc(fixed_arr, run.warped(u, grid, norm))


def _run_plan(plan, run: _Run, start=None, guarded: bool = True
              ) -> tuple[np.ndarray, sitk.Image, list[StageReport]]:
    """Run ``plan``'s stages from ``start`` (``(u, grid, reports)`` so far; default none);
    with ``guarded`` (and the options' guard) a stage that lowers the NCC is dropped. A stage
    on the grid of the one before it starts from the same field object, so that its warped
    moving image is made once (:meth:`_Run.warped`)."""
    o = run.options
    u, grid, reports = start or (None, None, [])
    reports = list(reports)
    for spacing, model in plan:
        t0 = time.perf_counter()
        s, name = model.config.sampling, model.config.network.name
        norm = s.normalization
        fixed_s, fixed_arr = run.fixed_on(spacing, norm)
        shape = fixed_s.GetSize()[::-1] + (run.fixed.GetDimension(),)
        if u is None:
            u = np.zeros(shape, np.float32)
        elif grid is not fixed_s:  # (run.fixed_on gives one grid object per spacing)
            u = resample_dvf(u, grid, fixed_s)
        grid = fixed_s
        moving_arr = run.warped(u, grid, norm)
        scale = spacing / model.spacing_mm
        t_net = time.perf_counter()
        phases = "one" if o.phases == "sparse" and 4 * spacing > SPARSE_MAX_MM else o.phases
        mirrored = o.flips_min_mm <= spacing <= FLIPS_MAX_MM
        r = predict_field(model.network, name, moving_arr, fixed_arr, run.device,
                          multi=s.Resolution == "multi", tile=o.tile or TILE, phases=phases, R=s.R,
                          Rlow=s.Rlow, flips=o.flips if mirrored else 1, dtype=run.dtype) * scale
        t_net = time.perf_counter() - t_net
        run.watch.add("network", t_net)
        if o.smooth_vox > 0:
            r = smooth_field(r, o.smooth_vox if model.smooth_vox is None else model.smooth_vox)
        candidate = compose_dvfs(u, r, grid.GetSpacing())
        after_arr = run.warped(candidate, grid, norm)
        before, after = ncc(fixed_arr, moving_arr), ncc(fixed_arr, after_arr)
        kept = abs(after) > abs(before) or not (o.guard and guarded)
        seconds = time.perf_counter() - t0
        if kept:
            u = candidate
            log.info("stage at %g mm (%s): NCC %.4f -> %.4f, kept, %.1f s", spacing,
                     model.source, before, after, seconds)
        else:
            log.warning("stage at %g mm dropped: it lowers the images' similarity (NCC %.4f ->"
                        " %.4f; %s, %.1f s)", spacing, before, after, model.source, seconds)
        largest = float(np.abs(r).max())
        reports.append(StageReport(float(spacing), bool(kept), round(before, 5),
                                   round(after, 5), round(largest, 3), tuple(grid.GetSize()),
                                   round(largest / scale, 3), model.trained_range_mm,
                                   round(seconds, 3), round(t_net, 3)))
    return u, grid, reports


def _finish(u, grid, reports, run: _Run) -> tuple[np.ndarray, sitk.Image, list[StageReport]]:
    """Log the stages kept; with ``unfold_field`` (and smoothing), fade the field towards a
    smooth extrapolation near the images' faces (:func:`regnet.geometry.faces.fade_at_faces`),
    then smooth and unfold it."""
    log.info("stages kept: %s", [f"{r.spacing_mm:g} mm" for r in reports if r.kept] or "none")
    unfold_field = run.options.unfold_field and run.options.smooth_vox > 0
    if unfold_field and any(r.kept for r in reports):
        u = fade_at_faces(u, grid, run.moving, run.global_transform)
    if unfold_field and sum(r.kept for r in reports) > 1:
        u = smooth_field(u, COMPOSED_SMOOTH_VOX)
    if unfold_field:
        u, passes = unfold(u, grid.GetSpacing())
        if passes:
            log.info("local smoothing where the field folded: %d pass(es)", passes)
    return u, grid, reports


def smooth_field(u: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Gaussian smoothing (sigma in voxels) of each component of a ``(*S, C)`` field, in
    place, the components in threads (:func:`regnet.threads.map_in_threads`); returns it."""
    def smooth(c: int) -> None:
        u[..., c] = gaussian_filter(u[..., c], sigma_vox, mode="nearest")

    map_in_threads(smooth, range(u.shape[-1]))
    return u


def reports_as_dicts(reports: list[StageReport]) -> list[dict]:
    return [{**asdict(r), "size_xyz": list(r.size_xyz)} for r in reports]
