"""Dense DVF prediction over a whole image in one shot, in tiles of bounded memory.

The network is fully convolutional: on a full-resolution input of ``29 + 2(m-1)`` voxels and a
low-resolution input of ``27 + (m-1)`` voxels per axis it predicts the displacement of ``m``
centres spaced 2 voxels apart, exactly as ``m`` separate patches would. We predict on the lattice
of even voxels (one "phase") and interpolate linearly to every voxel; ``phases="all"`` predicts
all ``2^n`` phases instead (exact, ``2^n`` times the work), ``phases="sparse"`` every second
centre of one phase (4 voxels apart: the head's last 3x3 convolution strides, and it and the
1x1 layers after it do 1/2^n of their work). The interpolation's cost in endpoint error is
measured by ``benchmarks/interpolation.py``.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regnet.inference.options import FLIPS, PHASES, TILE
from regnet.network.registry import DENSE
from regnet.network.unet import predict_whole


def _reach(multi: bool, radius_full: int = 14, radius_low: int = 26) -> int:
    return radius_low if multi else radius_full


@torch.no_grad()
def predict_lattice(model: nn.Module, pair: torch.Tensor, offset, device: torch.device,
                    tile: int = TILE, multi: bool = True, R: int = 14, Rlow: int = 26,
                    lattice_vox: int = 2) -> np.ndarray:
    """Predict at centres ``offset + lattice_vox * k`` (k = 0..m-1 per axis) of a padded
    pair; ``lattice_vox`` is 2 (the network's own output lattice) or 4 (every second of
    those, :meth:`regnet.network.regnet.RegNet.forward`'s ``stride``).

    pair: ``(1, 2, D, H, W)`` / ``(1, 2, H, W)`` float32 (moving, fixed), padded with room for
    every patch. Returns ``(m_z, m_y, m_x, C)`` displacements in mm (x, y, z components).
    """
    stride = lattice_vox // 2
    ndim = pair.dim() - 2
    reach = _reach(multi, R, Rlow)
    counts = [(n - 2 * reach - 1 - o) // 2 + 1 for n, o in zip(pair.shape[2:], offset,
                                                                  strict=True)]
    out = np.zeros(tuple(-(-m // stride) for m in counts) + (ndim,), np.float32)
    # balanced tiles of at most `tile` centres per axis (no thin leftover tiles), each starting
    # on the output lattice
    steps = [-(-m // -(-m // tile)) for m in counts]
    steps = [-(-step // stride) * stride for step in steps]
    starts = [range(0, m, step) for m, step in zip(counts, steps, strict=True)]
    for start in itertools.product(*starts):
        size = [min(step, m - s) for s, m, step in zip(start, counts, steps, strict=True)]
        first = [reach + o + 2 * s for o, s in zip(offset, start, strict=True)]  # first centre
        full_box = tuple(slice(c - R, c + 2 * (k - 1) + R + 1) for c, k in zip(first, size,
                                                                               strict=True))
        full = pair[(slice(None), slice(None)) + full_box].to(device)
        low = None
        if multi:
            low_box = tuple(slice(c - Rlow, c + 2 * (k - 1) + Rlow + 1, 2)
                            for c, k in zip(first, size, strict=True))
            low = pair[(slice(None), slice(None)) + low_box].to(device)
        pred = model(full, low, stride).float()[0]  # (C, k_z, k_y, k_x)
        target = tuple(slice(s // stride, s // stride + n) for s, n in zip(start, pred.shape[1:],
                                                                         strict=True))
        out[target] = pred.permute(*range(1, ndim + 1), 0).cpu().numpy()
    return out


def predict_dense(model: nn.Module, moving: np.ndarray, fixed: np.ndarray, device,
                  multi: bool = True, tile: int = TILE, phases: str = "one",
                  R: int = 14, Rlow: int = 26) -> np.ndarray:
    """Dense ``dvf_mm`` ``(D, H, W, C)`` for normalised ``moving``/``fixed`` on one grid:
    predicted at every voxel (``phases="all"``) or every 2 (``"one"``) or 4 (``"sparse"``)
    voxels per axis and interpolated linearly.

    Borders are padded by edge replication so that every voxel can be a patch centre.
    """
    if phases not in PHASES:
        raise ValueError(f"phases {phases!r}: choose one of {PHASES}")
    model.eval()
    shape = moving.shape
    ndim = len(shape)
    reach = _reach(multi, R, Rlow)
    lattice_vox = 4 if phases == "sparse" else 2
    pair = torch.from_numpy(np.stack([moving, fixed]).astype(np.float32, copy=False))[None]
    # edge replication in one torch call: 2x faster than np.pad on each image, then a stack
    pair = F.pad(pair, (reach, reach + lattice_vox) * ndim, mode="replicate")
    if phases == "all":
        dense = np.zeros(shape + (ndim,), np.float32)
        for offset in itertools.product((0, 1), repeat=ndim):
            lattice = predict_lattice(model, pair, offset, device, tile, multi, R, Rlow)
            target = tuple(slice(o, None, 2) for o in offset)
            region = dense[target]
            region[...] = lattice[tuple(slice(0, n) for n in region.shape[:-1])]
        return dense
    lattice = predict_lattice(model, pair, (0,) * ndim, device, tile, multi, R, Rlow,
                              lattice_vox)
    grid = torch.from_numpy(lattice).permute(ndim, *range(ndim))[None]  # (1, C, m...)
    size = [lattice_vox * (m - 1) + 1 for m in lattice.shape[:-1]]
    mode = "trilinear" if ndim == 3 else "bilinear"
    up = F.interpolate(grid, size=size, mode=mode, align_corners=True)[0]
    up = up.permute(*range(1, ndim + 1), 0).numpy()
    return np.ascontiguousarray(up[tuple(slice(0, n) for n in shape)])


def mirror_sets(ndim: int, flips: int) -> list[tuple[int, ...]]:
    """The array axes mirrored in each of ``flips`` passes: 1 none; 2 none and all; 4 (3D)
    none and each pair of axes (the half-turns about the three axes), (2D) every subset;
    8 (3D) every subset."""
    subsets = [c for k in range(ndim + 1) for c in itertools.combinations(range(ndim), k)]
    if flips == 1:
        return [()]
    if flips == 2:
        return [(), tuple(range(ndim))]
    if flips == 4 and ndim == 3:
        return [()] + [c for c in subsets if len(c) == 2]
    if flips == 2**ndim:
        return subsets
    raise ValueError(f"flips {flips}: choose one of {FLIPS[:ndim + 1]} for {ndim}D images")


def predict_field(model: nn.Module, network_name: str, moving: np.ndarray, fixed: np.ndarray,
                  device, multi: bool = True, tile: int = TILE, phases: str = "one",
                  R: int = 14, Rlow: int = 26, flips: int = 1,
                  dtype: torch.dtype | None = None, crop: int | None = None) -> np.ndarray:
    """Dense ``dvf_mm`` ``(D, H, W, C)`` from any network: a dense one in one pass, or in
    overlapping crops of ``crop`` voxels (:func:`predict_whole`;
    :func:`regnet.network.registry.dense_crop` says which), the seed's patch network on its
    lattice (:func:`predict_dense`).

    ``flips`` > 1 averages that many passes over mirrored copies of both images
    (:func:`mirror_sets`), each prediction mirrored back with its mirrored components negated:
    the networks were trained with mirrored patches (``sampling/stream.py``'s ``augment``), so
    every pass is an equally valid estimate and their mean has less variance. ``dtype``: run
    the convolutions in it (``torch.autocast``; None: float32); the field is float32."""
    ndim = moving.ndim
    total = np.zeros(moving.shape + (ndim,), np.float32)
    mirrors = mirror_sets(ndim, flips)
    for axes in mirrors:
        m = np.ascontiguousarray(np.flip(moving, axes)) if axes else moving
        f = np.ascontiguousarray(np.flip(fixed, axes)) if axes else fixed
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            if network_name in DENSE:
                r = predict_whole(model, m, f, device, crop)
            else:
                r = predict_dense(model, m, f, device, multi, tile, phases, R, Rlow)
        if axes:
            r = np.flip(r, axes)
            r[..., [ndim - 1 - a for a in axes]] *= -1  # components are (x, y, z)
        total += r
    return total / len(mirrors)
