"""Jacobian determinant of ``x -> x + u(x)``, the local volume change of a DVF."""

from __future__ import annotations

import numpy as np

from regnet.threads import map_in_threads

SLAB = 8  # slices along the first axis per block of jacobian_determinant


def jacobian_determinant(dvf_mm: np.ndarray, spacing_mm_xyz) -> np.ndarray:
    """``det(I + du/dx)`` per voxel, by central differences (one-sided at the borders).

    dvf_mm: ``(D, H, W, 3)`` or ``(H, W, 2)``, grid frame (x, y, z components). The determinant
    does not depend on the direction matrix, so the grid frame gives the physical answer.
    Returns ``(D, H, W)`` / ``(H, W)`` float32.

    Computed in slabs of ``SLAB`` slices along the first axis, each with one slice of halo,
    in threads (:func:`regnet.threads.map_in_threads`; NumPy releases the GIL in its array
    arithmetic): the same numbers, but the temporaries stay in the CPU's cache (512x512x150:
    1.7-2.2 s against 4.0-6.2 s in one block), and 2 cores share the work (256x256x160:
    0.24-0.27 against 0.39-0.44 s).
    """
    length = dvf_mm.shape[0]
    if length <= SLAB + 2:
        return _determinant(dvf_mm, spacing_mm_xyz)
    out = np.empty(dvf_mm.shape[:-1], np.float32)

    def slab(start: int) -> None:
        stop = min(start + SLAB, length)
        lo, hi = max(start - 1, 0), min(stop + 1, length)
        out[start:stop] = _determinant(dvf_mm[lo:hi], spacing_mm_xyz)[start - lo:stop - lo]

    map_in_threads(slab, range(0, length, SLAB))
    return out


def _determinant(dvf_mm: np.ndarray, spacing_mm_xyz) -> np.ndarray:
    """:func:`jacobian_determinant` in one block."""
    n = dvf_mm.shape[-1]
    spacing_zyx = np.asarray(spacing_mm_xyz, dtype=np.float64)[::-1]
    # j[c][a] = d u_c / d x_a + (c == a), components and axes in x, y(, z) order; float32 and
    # the cofactor expansion: a fifth of the time and a tenth of the memory of float64 matrices
    # handed to np.linalg.det (benchmarks/README.md)
    j = [[None] * n for _ in range(n)]
    for comp in range(n):
        grads_zyx = np.gradient(np.asarray(dvf_mm[..., comp], dtype=np.float32), *spacing_zyx)
        for axis_zyx, grad in enumerate(grads_zyx):
            j[comp][n - 1 - axis_zyx] = grad
        j[comp][comp] += 1.0
    if n == 2:
        return (j[0][0] * j[1][1] - j[0][1] * j[1][0]).astype(np.float32, copy=False)
    det = j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
    det -= j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
    det += j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    return det.astype(np.float32, copy=False)


def jacobian_summary(det: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """min, max, mean, std of the determinant and the share of voxels with det <= 0."""
    values = det[mask] if mask is not None else det.ravel()
    return {"jac_min": float(values.min()), "jac_max": float(values.max()),
            "jac_mean": float(values.mean()), "jac_std": float(values.std()),
            "jac_nonpositive_fraction": float((values <= 0).mean())}


BLEND_SIGMA_VOX = 2.0  # how softly unfold's smoothed region meets the rest


def unfold(dvf_mm: np.ndarray, spacing_mm_xyz, floor: float = 0.1, sigma_vox: float = 4.0,
           iterations: int = 30) -> tuple[np.ndarray, int]:
    """Remove folding by smoothing the field only around the voxels that fold.

    While some voxel's determinant is ``<= floor``, the field near every such voxel is blended
    towards its Gaussian-smoothed value (``sigma_vox`` voxels) with the weight
    ``min(1, 2 G * m)``: ``m`` marks the voxels within 3 voxels of a fold and ``G`` is a
    Gaussian of ``BLEND_SIGMA_VOX``, so that the smoothed region meets the untouched field
    without a step (a hard replacement left new folds at its rim: on a held-out chest CT 1,629
    folding voxels stayed after 3 passes; blended, none after 5). The smoothing and the
    determinant are recomputed only in a box around each connected patch of such voxels, wide
    enough for both kernels, so that the few folds of a large field cost little (the result
    equals doing it on the whole field). Stops early once a pass leaves as many such voxels as
    before. Returns the field (float32, same shape) and the number of passes made (0: nothing
    folded)."""
    from scipy.ndimage import binary_dilation, find_objects, gaussian_filter, label

    u = np.array(dvf_mm, dtype=np.float32)
    det = jacobian_determinant(u, spacing_mm_xyz)
    reach = [int(4.0 * sigma + 0.5) + 1 for sigma in (sigma_vox, BLEND_SIGMA_VOX)]  # kernels
    left = det.size + 1
    for k in range(iterations):
        count = int((det <= floor).sum())
        if count == 0 or count >= left:  # done, or a pass that mended nothing
            return u, k
        left = count
        labels, _ = label(binary_dilation(det <= floor, iterations=3))
        boxes = [grow(box, sum(reach), labels.shape) for box in find_objects(labels)]
        if sum(np.prod([b.stop - b.start for b in box]) for box in boxes) > labels.size:
            boxes = [tuple(slice(0, n) for n in labels.shape)]  # one box, one label: all
            labels = (labels > 0).astype(labels.dtype)
        weight = np.zeros(labels.shape, np.float32)
        smoothed = np.zeros_like(u)
        for index, box in enumerate(boxes, start=1):
            blend = gaussian_filter((labels[box] == index).astype(np.float32), BLEND_SIGMA_VOX,
                                    mode="constant")
            weight[box] += 2.0 * blend
            near = blend > 0
            for c in range(u.shape[-1]):  # exact where this box's weight reaches
                smoothed[box][..., c][near] = gaussian_filter(u[box][..., c], sigma_vox,
                                                              mode="nearest")[near]
        np.clip(weight, 0.0, 1.0, out=weight)
        for box in boxes:
            u[box] += weight[box][..., None] * (smoothed[box] - u[box])
            weight[box] = 0.0  # a box overlapping another is blended once
        for box in boxes:  # one-sided differences at a box's faces: keep its interior only
            inner = tuple(slice(0 if b.start == 0 else 1, None if b.stop == n else -1)
                          for b, n in zip(box, labels.shape, strict=True))
            det[box][inner] = jacobian_determinant(u[box], spacing_mm_xyz)[inner]
    return u, iterations


def grow(box: tuple, margin: int, shape) -> tuple:
    """The slices ``box`` widened by ``margin`` on every side, clipped to ``shape``."""
    return tuple(slice(max(b.start - margin, 0), min(b.stop + margin, n))
                 for b, n in zip(box, shape, strict=True))
