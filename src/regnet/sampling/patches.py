"""Two-scale patches around centre voxels (seed §2.4).

Full resolution: ``[c-R, c+R]`` per axis, ``(2R+1)^n``. Low resolution: ``[c-Rlow, c+Rlow]``
with stride 2, ``(Rlow+1)^n``. Channels are ``(moving, fixed)`` (docs/conventions.md).
"""

from __future__ import annotations

import numpy as np


def extract_patches(moving: np.ndarray, fixed: np.ndarray, centres: np.ndarray, radius: int,
                    stride: int = 1) -> np.ndarray:
    """Cut ``(N, 2, P, P(, P))`` patches (channels moving, fixed), ``P = 2*radius/stride + 1``.

    moving, fixed: ``(D, H, W)`` or ``(H, W)`` on the same grid; centres: ``(N, ndim)``.
    Centres must lie at least ``radius`` from every face.
    """
    size = 2 * radius // stride + 1
    out = np.empty((len(centres), 2) + (size,) * moving.ndim, dtype=np.float32)
    for i, centre in enumerate(centres):
        box = tuple(slice(c - radius, c + radius + 1, stride) for c in centre)
        out[i, 0] = moving[box]
        out[i, 1] = fixed[box]
    return out


def centre_targets(dvf_mm: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(N, C)`` DVF (x, y(, z) mm) at the centres: the regression target with ``Ry = 0``."""
    return dvf_mm[tuple(centres.T)].astype(np.float32)
