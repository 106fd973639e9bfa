"""Composition of displacement fields and of an affine map with a field, in our convention.

A DVF ``u`` maps fixed points into the moving image: ``T(x) = x + u(x)``. Registering the
fixed image to ``moving`` warped by ``u_prev`` gives a residual ``r``; the whole map is
``T(x) = T_prev(x + r(x))``, so

    ``u(x) = r(x) + u_prev(x + r(x))``

(:func:`compose_dvfs`). A global pre-alignment ``A`` (``x -> M x + t``, physical mm) applied
before a field ``u`` found on the pre-aligned moving image gives ``T(x) = A(x + u(x))``
(:func:`compose_affine`). Fields are grid-frame ``(D, H, W, 3)`` / ``(H, W, 2)`` mm arrays on
one grid; outside the grid ``u_prev`` is extended by its border values.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def sample_field(field_mm: np.ndarray, index_xyz: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``field_mm`` ``(*shape, C)`` at continuous voxel indices
    ``index_xyz`` ``(*shape, ndim)`` (x, y(, z) order); border values beyond the grid."""
    import torch
    import torch.nn.functional as F

    sizes_xyz = np.array(field_mm.shape[:-1][::-1], dtype=np.float64)
    grid = 2.0 * index_xyz / np.maximum(sizes_xyz - 1, 1) - 1.0  # align_corners=True
    values = torch.from_numpy(np.moveaxis(field_mm, -1, 0)[None].astype(np.float32))
    points = torch.from_numpy(grid[None].astype(np.float32))
    sampled = F.grid_sample(values, points, mode="bilinear", padding_mode="border",
                            align_corners=True)[0]
    return np.moveaxis(sampled.numpy(), 0, -1)


def voxel_indices(shape_zyx) -> np.ndarray:
    """``(*shape, ndim)`` float64 voxel indices in x, y(, z) order."""
    axes = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape_zyx], indexing="ij")
    return np.stack(axes[::-1], axis=-1)


def physical_points(grid: sitk.Image) -> np.ndarray:
    """``(*shape, ndim)`` physical coordinates (x, y(, z) mm) of every voxel of ``grid``."""
    n = grid.GetDimension()
    direction = np.asarray(grid.GetDirection()).reshape(n, n)
    index = voxel_indices(grid.GetSize()[::-1])
    return np.asarray(grid.GetOrigin()) + (index * np.asarray(grid.GetSpacing())) @ direction.T


def moving_index(dvf_mm: np.ndarray, grid: sitk.Image, moving: sitk.Image) -> np.ndarray:
    """``(*shape, ndim)`` continuous voxel indices (x, y(, z) order) in ``moving`` of the points
    ``x + u(x)``, for every voxel ``x`` of ``grid`` and its grid-frame field ``dvf_mm``."""
    n = grid.GetDimension()
    direction = np.asarray(grid.GetDirection()).reshape(n, n)
    target = physical_points(grid) + dvf_mm @ direction.T
    moving_direction = np.asarray(moving.GetDirection()).reshape(n, n)
    return (target - np.asarray(moving.GetOrigin())) @ moving_direction / np.asarray(
        moving.GetSpacing())


def compose_dvfs(u_prev_mm: np.ndarray, r_mm: np.ndarray, spacing_mm_xyz) -> np.ndarray:
    """``u(x) = r(x) + u_prev(x + r(x))``: first ``r``, then ``u_prev`` (same grid, grid
    frame, mm). Returns float32 of the fields' shape."""
    if u_prev_mm.shape != r_mm.shape:
        raise ValueError(f"fields differ in shape: {u_prev_mm.shape} and {r_mm.shape}")
    spacing = np.asarray(spacing_mm_xyz, dtype=np.float64)
    index = voxel_indices(r_mm.shape[:-1]) + r_mm / spacing
    return (r_mm + sample_field(u_prev_mm, index)).astype(np.float32)


def affine_parts(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    """``(M, t)`` with ``transform(p) = M p + t`` (physical mm) for a SimpleITK affine-like
    transform (Euler, Similarity, Affine, Translation, or a composite of them)."""
    n = transform.GetDimension()
    origin = np.zeros(n)
    t = np.asarray(transform.TransformPoint(tuple(origin)))
    columns = [np.asarray(transform.TransformPoint(tuple(np.eye(n)[i]))) - t for i in range(n)]
    return np.stack(columns, axis=1), t


def through_global(dvf_mm: np.ndarray, grid: sitk.Image,
                   transform: sitk.Transform | None) -> np.ndarray:
    """The DVF of ``x -> A(x + u(x))`` for a global pre-alignment ``A`` (``transform``), or
    ``dvf_mm`` itself when there is none (:func:`compose_affine`)."""
    if transform is None:
        return dvf_mm
    return compose_affine(*affine_parts(transform), dvf_mm, grid)


def compose_affine(matrix: np.ndarray, offset: np.ndarray, dvf_mm: np.ndarray,
                   grid: sitk.Image) -> np.ndarray:
    """The DVF of ``x -> A(x + u(x))`` with ``A(p) = matrix p + offset`` (physical mm), on
    ``grid``; ``dvf_mm`` and the result are grid-frame mm."""
    n = grid.GetDimension()
    direction = np.asarray(grid.GetDirection()).reshape(n, n)
    x_phys = physical_points(grid)
    p = x_phys + dvf_mm.astype(np.float64) @ direction.T
    moved = p @ np.asarray(matrix).T + np.asarray(offset)
    return ((moved - x_phys) @ direction).astype(np.float32)
