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


def grid_sample_threaded(values, grid):
    """``F.grid_sample`` (linear, border padding, ``align_corners=True``) of one input
    ``(1, C, *S)`` at ``grid`` ``(1, *Q, ndim)``, split along Q's first axis into one batch
    entry per torch thread: on the CPU torch parallelises grid sampling over the batch only, so
    one entry runs on one core (a 256x256x160 warp: 0.49 -> 0.25 s on 2 cores, the same
    values). Returns ``(1, C, *Q)``."""
    import torch
    import torch.nn.functional as F

    n, parts = grid.shape[1], min(torch.get_num_threads(), grid.shape[1])
    options = dict(mode="bilinear", padding_mode="border", align_corners=True)
    if parts == 1 or values.device.type != "cpu":
        return F.grid_sample(values, grid, **options)
    step = -(-n // parts)
    if step * parts > n:  # pad Q's first axis with its last slice
        tail = grid[:, -1:].expand(-1, step * parts - n, *grid.shape[2:])
        grid = torch.cat([grid, tail], 1)
    out = F.grid_sample(values.expand(parts, *values.shape[1:]),
                        grid.reshape(parts, step, *grid.shape[2:]), **options)
    out = out.transpose(0, 1).reshape(1, values.shape[1], step * parts, *out.shape[3:])
    return out[:, :, :n]


def sample_field(field_mm: np.ndarray, index_xyz) -> np.ndarray:
    """Linear interpolation of ``field_mm`` ``(*shape, C)`` at continuous voxel indices
    ``index_xyz`` ``(*shape, ndim)`` (x, y(, z) order; an array or a float32 tensor); border
    values beyond the grid. Float32 arithmetic, like every warp."""
    import torch

    sizes_xyz = field_mm.shape[:-1][::-1]
    grid = torch.as_tensor(index_xyz, dtype=torch.float32).clone()
    for c, size in enumerate(sizes_xyz):  # align_corners=True
        grid[..., c].mul_(2.0 / max(size - 1, 1)).sub_(1.0)
    values = torch.from_numpy(np.moveaxis(field_mm, -1, 0)[None].astype(np.float32))
    sampled = grid_sample_threaded(values, grid[None])[0]
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


def index_map(dvf_mm: np.ndarray, grid: sitk.Image, moving: sitk.Image):
    """``(*shape, ndim)`` float32 tensor: the continuous voxel indices (x, y(, z) order) in
    ``moving`` of the points ``x + u(x)``, for every voxel ``x`` of ``grid`` and its
    grid-frame field ``dvf_mm`` ``(*shape, ndim)``.

    The index is affine in the voxel index ``i`` and in ``u``: ``A S_f i + A u + b`` with
    ``A = S_m^-1 D_m^T D_f`` and ``b = S_m^-1 D_m^T (O_f - O_m)``; built term by term in
    place, with no array of physical points (an axis-aligned grid has one term of each
    kind)."""
    import torch

    n = grid.GetDimension()
    d_f = np.asarray(grid.GetDirection(), np.float64).reshape(n, n)
    d_m = np.asarray(moving.GetDirection(), np.float64).reshape(n, n)
    to_index = d_m.T / np.asarray(moving.GetSpacing(), np.float64)[:, None]
    a = to_index @ d_f
    a_s = a * np.asarray(grid.GetSpacing(), np.float64)[None, :]
    b = to_index @ np.subtract(grid.GetOrigin(), moving.GetOrigin())
    shape = dvf_mm.shape[:-1]
    u = torch.from_numpy(np.ascontiguousarray(dvf_mm, dtype=np.float32))
    voxel = [torch.arange(m, dtype=torch.float32).view([m if k == axis else 1
                                                        for k in range(n)])
             for axis, m in enumerate(shape)]  # array axes (z, y, x)
    index = torch.empty(shape + (n,), dtype=torch.float32)
    for c in range(n):  # moving index component c (x, y, z order)
        # the voxel terms broadcast from lines (one line for an axis-aligned grid); the field's
        # terms are added straight into the output, one pass over it each
        line = torch.full((1,) * n, float(b[c]))
        for k in range(n):  # k: x, y(, z) of the grid; array axis n - 1 - k
            if a_s[c, k] != 0.0:
                line = line.add(voxel[n - 1 - k], alpha=float(a_s[c, k]))
        terms = [k for k in range(n) if a[c, k] != 0.0]
        torch.add(line.expand(shape), u[..., terms[0]], alpha=float(a[c, terms[0]]),
                  out=index[..., c])
        for k in terms[1:]:
            index[..., c].add_(u[..., k], alpha=float(a[c, k]))
    return index


def moving_index(dvf_mm: np.ndarray, grid: sitk.Image, moving: sitk.Image) -> np.ndarray:
    """:func:`index_map` as a float32 array."""
    return index_map(dvf_mm, grid, moving).numpy()


def compose_dvfs(u_prev_mm: np.ndarray, r_mm: np.ndarray, spacing_mm_xyz) -> np.ndarray:
    """``u(x) = r(x) + u_prev(x + r(x))``: first ``r``, then ``u_prev`` (same grid, grid
    frame, mm). Returns float32 of the fields' shape."""
    import torch

    if u_prev_mm.shape != r_mm.shape:
        raise ValueError(f"fields differ in shape: {u_prev_mm.shape} and {r_mm.shape}")
    shape, n = r_mm.shape[:-1], r_mm.shape[-1]
    r = torch.from_numpy(np.ascontiguousarray(r_mm, dtype=np.float32))
    index = torch.empty(r.shape, dtype=torch.float32)
    for c in range(n):  # x + r / spacing, component c (x, y, z order)
        axis = n - 1 - c
        voxel = torch.arange(shape[axis], dtype=torch.float32).view(
            [shape[axis] if k == axis else 1 for k in range(n)])
        torch.add(voxel, r[..., c], alpha=1.0 / float(spacing_mm_xyz[c]), out=index[..., c])
    return (r + torch.from_numpy(sample_field(u_prev_mm, index))).numpy()


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
