"""The inverse of a displacement field, and how consistent a field and its inverse are.

A DVF ``u`` on the fixed grid maps fixed points into the moving image, ``T(x) = x + u(x)``.
Its inverse ``v`` lives on the moving grid and maps moving points back into the fixed image,
``T^-1(y) = y + v(y)``; it satisfies ``v(y) = -u(y + v(y))``. :func:`invert_dvf` solves that
by fixed-point iteration (Chen et al., Med. Phys. 2008), ``v <- -u(y + v)``, which converges
wherever the field does not fold (``|du/dx| < 1``). It works between any two grids, which
ITK's ``InvertDisplacementFieldImageFilter`` (one grid for both) does not;
``benchmarks/invert.py`` measures the two side by side.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from regnet.geometry.compose import moving_index, physical_points, sample_field
from regnet.geometry.faces import face_distance_mm

log = logging.getLogger(__name__)

ITERATIONS = 100  # at most; most voxels settle in 5-15
TOLERANCE_MM = 1e-3  # stop once no voxel's inverse moves more than this in one iteration


def _direction(image: sitk.Image) -> np.ndarray:
    n = image.GetDimension()
    return np.asarray(image.GetDirection(), dtype=np.float64).reshape(n, n)


def invert_dvf(dvf_mm: np.ndarray, grid: sitk.Image, target: sitk.Image,
               iterations: int = ITERATIONS, tolerance_mm: float = TOLERANCE_MM
               ) -> tuple[np.ndarray, dict]:
    """The inverse of ``dvf_mm`` (grid frame, mm, ``(D, H, W, 3)`` on ``grid``) on
    ``target``'s grid: ``(inverse_mm, info)``, ``inverse_mm`` grid-frame mm of ``target``'s
    array shape plus ``(3,)`` (2D: ``(2,)``); ``info`` holds ``iterations`` and
    ``last_change_mm`` (the largest update of the last iteration). Beyond ``grid`` the field
    continues with its border values. A voxel stops iterating once its update is below
    ``tolerance_mm``: most settle in a few iterations, a few near strong compression take
    many."""
    n = grid.GetDimension()
    dg, dt = _direction(grid), _direction(target)
    spacing = np.asarray(grid.GetSpacing(), dtype=np.float64)
    origin = np.asarray(grid.GetOrigin(), dtype=np.float64)
    y = physical_points(target).reshape(-1, n)
    v_phys = np.zeros_like(y)
    active = np.arange(len(y))
    done, change = 0, np.inf
    while done < iterations and active.size:
        index = (y[active] + v_phys[active] - origin) @ dg / spacing
        sampled = sample_field(dvf_mm, index.reshape((-1,) + (1,) * (n - 1) + (n,)))
        new = -(sampled.reshape(-1, n).astype(np.float64) @ dg.T)
        moved = np.abs(new - v_phys[active]).max(axis=1)
        v_phys[active] = new
        change = float(moved.max())
        active, done = active[moved >= tolerance_mm], done + 1
    if active.size:
        log.warning("inverse: after %d iterations %d voxels still move by up to %.3g mm; the "
                    "field may fold there", done, active.size, change)
    inverse = (v_phys @ dt).reshape(tuple(target.GetSize())[::-1] + (n,))
    return inverse.astype(np.float32), {"iterations": done, "last_change_mm": round(change, 6)}


def inverse_consistency(dvf_mm: np.ndarray, grid: sitk.Image, inverse_mm: np.ndarray,
                        inverse_grid: sitk.Image, mask: np.ndarray | None = None) -> dict:
    """``|u(x) + v(x + u(x))|`` (mm) over the voxels x of ``grid`` (inside ``mask``, a bool
    array of ``grid``'s shape, if given) whose mapped point lies on ``inverse_grid``:
    ``{"mean_mm", "p95_mm", "max_mm", "voxels"}``; 0 for an exact inverse."""
    index = moving_index(dvf_mm, grid, inverse_grid)
    inside = face_distance_mm(index, inverse_grid.GetSize(), [1.0] * grid.GetDimension()) >= -1e-6
    if mask is not None:
        inside &= mask
    if not inside.any():
        return {"mean_mm": None, "p95_mm": None, "max_mm": None, "voxels": 0}
    v_phys = sample_field(inverse_mm, index).astype(np.float64) @ _direction(inverse_grid).T
    u_phys = dvf_mm.astype(np.float64) @ _direction(grid).T
    error = np.linalg.norm(u_phys + v_phys, axis=-1)[inside]
    return {"mean_mm": round(float(error.mean()), 5),
            "p95_mm": round(float(np.percentile(error, 95)), 5),
            "max_mm": round(float(error.max()), 5), "voxels": int(inside.sum())}


def invert_and_check(dvf_mm: np.ndarray, grid: sitk.Image, target: sitk.Image,
                     mask: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """:func:`invert_dvf` onto ``target`` and the :func:`inverse_consistency` of the result
    (inside ``mask``, on ``grid``), with the iteration count; logged."""
    inverse_mm, info = invert_dvf(dvf_mm, grid, target)
    consistency = {**inverse_consistency(dvf_mm, grid, inverse_mm, target, mask), **info}
    log.info("inverse: %d iterations; inverse-consistency |u(x) + v(x + u(x))| mean %s mm, "
             "max %s mm", info["iterations"], consistency["mean_mm"], consistency["max_mm"])
    return inverse_mm, consistency
