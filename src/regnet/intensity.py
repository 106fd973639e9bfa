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
