"""The seed's artificial DVFs: random peaks, Gaussian blur, separate +/- rescaling.

Random, then deterministic: :func:`draw_peaks` draws a frozen :class:`PeakRecord` from an
explicit ``numpy.random.Generator``; :func:`build_dvf` turns it into a field with no randomness.

Frequencies (``D``): 0 low and 1 medium use the "smooth" method, 2 high uses "blob".
Lengths (Border, sigma, distances) are in voxels; displacement values are in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from regnet.config import SynthesisConfig
from regnet.errors import RegNetError

METHODS = {0: "smooth", 1: "smooth", 2: "blob"}
FREQUENCY_NAMES = {0: "low", 1: "medium", 2: "high",  # the seed's
                   3: "respiratory", 4: "mixed", 5: "affine"}  # ours: synthesis/motion.py
TRUNCATE = 4.0  # scipy's default, as in the seed


@dataclass(frozen=True)
class PeakRecord:
    """Everything needed to rebuild one artificial DVF.

    peaks_zyx: ``(P, ndim)`` int voxel indices; values_mm: ``(P, ndim)`` x, y(, z) components.
    """

    frequency: int
    sigma_vox: float
    peaks_zyx: np.ndarray
    values_mm: np.ndarray

    @property
    def method(self) -> str:
        return METHODS[self.frequency]


def candidate_bounds(shape_zyx, border: int) -> list[tuple[int, int]]:
    """Inclusive index range ``[Border, size - Border]`` per axis (the seed's rule)."""
    bounds = [(border, size - border) for size in shape_zyx]
    if any(lo > hi for lo, hi in bounds):
        raise RegNetError(f"image size {tuple(shape_zyx)} (z, y, x) is smaller than "
                          f"2*Border = {2 * border} voxels; no peak can be placed")
    return bounds


def _smooth_peaks(bounds, count: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.integers(lo, hi + 1, size=count) for lo, hi in bounds], axis=1)


def _blob_peaks(bounds, count: int, distance: int, rng: np.random.Generator) -> np.ndarray:
    """Peaks at least ``distance`` apart (max-norm): each pick removes a ±distance cube."""
    lows = np.array([lo for lo, _ in bounds])
    free = np.ones([hi - lo + 1 for lo, hi in bounds], dtype=bool)
    remaining = free.size
    listed = None  # flat indices of free candidates, once rejection sampling gets slow
    peaks = []
    while len(peaks) < count and remaining >= 5:
        pick = None
        if listed is None:
            for _ in range(64):  # rejection sampling is cheap while most candidates are free
                trial = np.array([rng.integers(0, s) for s in free.shape])
                if free[tuple(trial)]:
                    pick = trial
                    break
            else:
                listed = np.flatnonzero(free)
        if pick is None:
            pick = np.array(np.unravel_index(listed[rng.integers(0, listed.size)], free.shape))
        peaks.append(pick + lows)
        cube = tuple(slice(max(0, p - distance), p + distance + 1) for p in pick)
        remaining -= int(free[cube].sum())
        free[cube] = False
        if listed is not None:
            listed = listed[free.ravel()[listed]]
    return np.array(peaks, dtype=np.int64)


def draw_peaks(shape_zyx, frequency: int, config: SynthesisConfig,
               rng: np.random.Generator, max_deform_mm: float | None = None) -> PeakRecord:
    """Draw the peaks of one artificial DVF on a grid of ``shape_zyx`` (2 or 3 axes).

    The first two peaks are zero vectors. The others draw every component uniformly in
    ``[-MaxDeform, MaxDeform]`` mm; in 2D mode on a 3D grid the z component is 0.
    """
    ndim = len(shape_zyx)
    bounds = candidate_bounds(shape_zyx, config.Border)
    count = int(config.Np[frequency])
    if METHODS[frequency] == "smooth":
        peaks = _smooth_peaks(bounds, count, rng)
    else:
        peaks = _blob_peaks(bounds, count, config.DistanceDeform, rng)
    amplitude = float(config.MaxDeform[frequency] if max_deform_mm is None else max_deform_mm)
    values = rng.uniform(-amplitude, amplitude, size=(len(peaks), ndim))
    values[:2] = 0.0
    if config.Dim == "2D" and ndim == 3:
        values[:, 2] = 0.0
    return PeakRecord(frequency, float(config.sigmaB[frequency]), peaks, values)


def blur_matrix(size: int, sigma_vox: float) -> np.ndarray:
    """``(size, size)`` matrix whose column j is scipy's 1D Gaussian blur of a delta at j.

    mode 'reflect' and truncate 4, exactly as ``scipy.ndimage.gaussian_filter`` by default.
    """
    return gaussian_filter1d(np.eye(size), sigma_vox, axis=0, mode="reflect", truncate=TRUNCATE)


def blur_peaks(shape_zyx, peaks_zyx: np.ndarray, values: np.ndarray, sigma_vox: float
               ) -> np.ndarray:
    """Gaussian blur of a volume that is zero but at the peaks, for every component at once.

    Equal to ``gaussian_filter(volume, sigma)`` (a separable, linear filter) but computed as a sum
    of separable per-peak kernels: one ``(D*H, P) @ (P, W)`` matrix product per component, far
    cheaper than direct filtering with sigma 35. Returns ``shape_zyx + (C,)`` float32.
    """
    factors = [blur_matrix(n, sigma_vox)[:, peaks_zyx[:, a]].astype(np.float32)
               for a, n in enumerate(shape_zyx)]  # each (n_axis, P)
    outer = factors[0]
    for f in factors[1:-1]:
        outer = (outer[..., None, :] * f[None, :, :]).reshape(-1, f.shape[1])
    last = factors[-1]
    fields = [(outer @ (last * values[:, c].astype(np.float32)).T).reshape(shape_zyx)
              for c in range(values.shape[1])]
    return np.stack(fields, axis=-1)


def rescale_component(blurred: np.ndarray, peak_values: np.ndarray) -> np.ndarray:
    """The seed's separate rescaling of one component (in place on a copy).

    Positive voxels: ``[min_pos, max_pos] -> [0, max(peaks)]``.
    Negative voxels: ``[min_neg, 0) -> [min(peaks), ~0)`` (linear through 0).
    """
    out = blurred.copy()
    pos = out > 0
    neg = out < 0
    top, bottom = float(peak_values.max()), float(peak_values.min())
    if pos.any():
        lo, hi = out[pos].min(), out[pos].max()
        out[pos] = (out[pos] - lo) / (hi - lo) * top if hi > lo else top
    if neg.any():
        out[neg] = out[neg] / out[neg].min() * bottom
    return out


def build_dvf(record: PeakRecord, shape_zyx) -> np.ndarray:
    """The DVF ``shape_zyx + (ndim,)`` in mm (x, y(, z) components) from a peak record."""
    blurred = blur_peaks(shape_zyx, record.peaks_zyx, record.values_mm, record.sigma_vox)
    for c in range(blurred.shape[-1]):
        blurred[..., c] = rescale_component(blurred[..., c], record.values_mm[:, c])
    return blurred.astype(np.float32)


def deformed_area(shape_zyx, record: PeakRecord, distance_area: int, dim: str) -> np.ndarray:
    """The seed's "deformed area" of a blob DVF: a ±DistanceArea cube around each peak
    (three slices thick in z in 2D mode on a 3D grid). uint8 mask of ``shape_zyx``."""
    area = np.zeros(shape_zyx, dtype=np.uint8)
    for peak in record.peaks_zyx:
        box = [slice(max(0, p - distance_area), p + distance_area + 1) for p in peak]
        if dim == "2D" and len(shape_zyx) == 3:
            box[0] = slice(max(0, peak[0] - 1), peak[0] + 2)
        area[tuple(box)] = 1
    return area
