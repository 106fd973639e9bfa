"""How a network sees intensities: one normalisation that training and registration share.

* ``ct``: ``(HU + 1000) / 4095``, the seed's: air 0, water 0.24, dense bone about 0.6;
* ``robust``: each image's 1st..99th percentile mapped to 0..1 (MR and anything uncalibrated).

The mode is stored in every checkpoint's config (``sampling.normalization``).
"""

from __future__ import annotations

import numpy as np

CT_OFFSET_HU, CT_SCALE_HU = 1000.0, 4095.0


def normalize(array: np.ndarray, mode: str) -> np.ndarray:
    """``ct``: ``(HU + 1000) / 4095`` as in the seed; ``robust``: 1st..99th percentile -> 0..1.
    Any shape; returns float32."""
    array = array.astype(np.float32, copy=False)
    if mode == "ct":
        return (array + CT_OFFSET_HU) / CT_SCALE_HU
    lo, hi = np.percentile(array, [1.0, 99.0])
    return ((array - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


def random_contrast(arrays: list[np.ndarray], rng: np.random.Generator,
                    noise_max: float = 0.02) -> list[np.ndarray]:
    """One random monotone intensity mapping applied alike to every array of one image (its
    full- and low-resolution patches), plus Gaussian noise: how another scanner or protocol
    might show the same tissue. Intensities are taken to [0, 1] over the arrays' range, raised
    to a random gamma (log-normal, sigma 0.3), passed through a random increasing
    piecewise-linear curve (4 inner knots) and taken back; noise sigma is up to ``noise_max``
    of the range. Geometry, and so the displacement label, is unchanged."""
    lo = min(float(a.min()) for a in arrays)
    span = max(max(float(a.max()) for a in arrays) - lo, 1e-6)
    gamma = float(np.exp(rng.normal(0.0, 0.3)))
    knots_x = np.linspace(0.0, 1.0, 6)
    knots_y = np.concatenate([[0.0], np.sort(rng.random(4)), [1.0]])
    sigma = rng.uniform(0.0, noise_max) * span
    out = []
    for a in arrays:
        t = np.interp(((a - lo) / span) ** gamma, knots_x, knots_y)
        out.append((lo + span * t + rng.normal(0.0, sigma, a.shape)).astype(np.float32))
    return out
