"""How a network sees intensities: one normalisation that training and registration share.

* ``ct``: ``(HU + 1000) / 4095``, the seed's: air 0, water 0.24, dense bone about 0.6;
* ``robust``: each image's 1st..99th percentile mapped to 0..1 (MR and anything uncalibrated).

The mode is stored in every checkpoint's config (``sampling.normalization``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

CT_OFFSET_HU, CT_SCALE_HU = 1000.0, 4095.0
AIR_HU = -500.0  # a CT's 1st percentile lies below this (air around the body)
MR_NEGATIVE_SHARE = 0.01  # an MR's 1st percentile is >= -1 % of its 99th
PERCENTILE_SAMPLE = 2_000_000  # intensity_percentiles looks at about this many voxels


def guess_modality(array: np.ndarray) -> str | None:
    """``'CT'`` when intensities look like Hounsfield units (1st percentile <= -500: air),
    ``'MR'`` when they are essentially non-negative (1st percentile >= -1 % of the 99th),
    ``None`` otherwise (for example z-scored or filtered data). Any shape."""
    values = np.asarray(array).ravel()[:: max(1, np.asarray(array).size // 1_000_000)]
    p1, p99 = np.percentile(values.astype(np.float64), [1.0, 99.0])
    if p1 <= AIR_HU:
        return "CT"
    if p99 > 0 and p1 >= -MR_NEGATIVE_SHARE * p99:
        return "MR"
    return None


def normalize(array: np.ndarray, mode: str) -> np.ndarray:
    """``ct``: ``(HU + 1000) / 4095`` as in the seed; ``robust``: 1st..99th percentile -> 0..1.
    Any shape; returns float32."""
    array = array.astype(np.float32, copy=False)
    if mode == "ct":
        return (array + CT_OFFSET_HU) / CT_SCALE_HU
    lo, hi = np.percentile(array, [1.0, 99.0])
    return ((array - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


def random_contrast(arrays: list[np.ndarray], rng: np.random.Generator,
                    noise_max: float = 0.02, strides=None, bias_max: float = 0.0,
                    blur_max_vox: float = 0.0, slab_blur_max_vox: float = 0.0
                    ) -> list[np.ndarray]:
    """One random intensity change applied alike to every array of one image (its full- and
    low-resolution patches): how another scanner or protocol might show the same tissue.

    Intensities are taken to [0, 1] over the arrays' range, raised to a random gamma
    (log-normal, sigma 0.3) and passed through a random increasing piecewise-linear curve
    (4 inner knots); then, when asked, multiplied by a smooth bias field (log-linear, a random
    slope per axis of up to ``bias_max`` per 50 voxels), blurred (Gaussian, sigma up to
    ``blur_max_vox``) and blurred along one random axis only (sigma up to
    ``slab_blur_max_vox``: thick slices, as in clinical MR with 4-5 mm slices); taken back to
    the range, plus Gaussian noise of sigma up to ``noise_max`` of the range. ``strides``: each
    array's voxel size in voxels of the first (a half-resolution patch: 2); all arrays are
    centred on the same point, so bias and blur agree in space. Geometry, and so the
    displacement label, is unchanged."""
    strides = strides or [1] * len(arrays)
    lo = min(float(a.min()) for a in arrays)
    span = max(max(float(a.max()) for a in arrays) - lo, 1e-6)
    gamma = float(np.exp(rng.normal(0.0, 0.3)))
    knots_x = np.linspace(0.0, 1.0, 6)
    knots_y = np.concatenate([[0.0], np.sort(rng.random(4)), [1.0]])
    sigma = rng.uniform(0.0, noise_max) * span
    # drawn only when asked, so that the plain contrast's random stream stays as it was
    slopes = rng.uniform(-bias_max, bias_max, arrays[0].ndim) / 50.0 if bias_max > 0 else None
    blur = rng.uniform(0.0, blur_max_vox) if blur_max_vox > 0 else 0.0
    slab = ((int(rng.integers(arrays[0].ndim)), rng.uniform(0.0, slab_blur_max_vox))
            if slab_blur_max_vox > 0 else None)
    out = []
    for a, stride in zip(arrays, strides, strict=True):
        t = np.interp(((a - lo) / span) ** gamma, knots_x, knots_y)
        if slopes is not None:
            offsets = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * stride for n in a.shape],
                                  indexing="ij")
            t = t * np.exp(sum(g * r for g, r in zip(slopes, offsets, strict=True)))
        if blur > 0:
            t = gaussian_filter(t, blur / stride)
        if slab is not None and slab[1] > 0:
            t = gaussian_filter1d(t, slab[1] / stride, axis=slab[0])
        out.append((lo + span * t + rng.normal(0.0, sigma, a.shape)).astype(np.float32))
    return out


def intensity_percentiles(normalised: np.ndarray) -> list[float]:
    """``[p1, p99]`` of a normalised image (any shape), on a subsample for speed."""
    values = normalised.ravel()[:: max(1, normalised.size // PERCENTILE_SAMPLE)]
    return [float(v) for v in np.percentile(values, [1, 99])]
