"""A dense network with a cost volume (beyond the seed): matching built in, few parameters.

The U-Net (:mod:`regnet.network.unet`) must learn to compare the two images from scratch, and
on CT crops it stayed at the identity for thousands of CPU steps. This network compares them
explicitly, as optical-flow networks (PWC-Net) and probabilistic dense displacement networks
do:

1. one small encoder, shared by both images, gives features at 1/2 and unit-length features
   at 1/4 of the input's resolution;
2. at 1/4, the cost volume holds the dot product of the fixed image's feature with the moving
   image's, shifted by every offset of up to ``radius`` quarter-resolution cells per axis
   (``(2 radius + 1)^dim`` offsets);
3. a softmax over the offsets (learned sharpness) gives the expected offset: a field at 1/4,
   in voxels times 4, converted to mm by ``voxel_mm`` (the training spacing, kept with the
   weights);
4. upsampled to 1/2; with ``fine_radius`` > 0, the moving image's 1/2 features are warped
   by it and a second, local cost volume there (``(2 fine_radius + 1)^dim`` offsets of one
   half-resolution cell) adds its expected offset, as PWC-Net's coarse-to-fine matching does;
5. refined at 1/2 by three convolutions that see the field and both images' 1/2 features (the
   moving image's warped, with ``fine_radius`` > 0);
6. with ``full_width`` > 0, upsampled to full resolution and refined there by three narrow
   convolutions (``full_width`` channels, no normalisation) that see the fixed image, the
   moving image warped by the field, and the field: the half-resolution field cannot follow
   detail finer than two voxels;
7. with ``full_radius`` > 0 (and ``full_width``), before that refinement, a third, local cost
   volume on full-resolution features (one convolution of each image by zero-sum filters,
   ``full_match_width`` channels, default ``full_width``: they see local contrast, not the
   intensity level, which would make every voxel's features point alike), the moving
   image's warped by the field, adds its expected offset of up to ``full_radius`` voxels:
   matching on single voxels, for precision below the half-resolution cells. Its sharpness
   starts at 0 (a uniform softmax, an offset of exactly 0), so that a network grown by it
   (``regnet train --init``) starts at the field it had, and is learned in units of
   :data:`FULL_SHARPNESS_UNIT`.

Like the U-Net it returns the field at the centres of 2x2(x2) blocks, ``(B, dim, *S/2)`` mm
(x, y(, z)), and :meth:`dense` upsamples it; with ``full_width`` > 0 it returns the field at
every voxel, ``(B, dim, *S)``. Inputs ``(B, 2, *S)`` (moving, fixed) with lengths multiples
of 4. With ``radius`` 3 it reaches 12 voxels per axis.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from regnet.network.unet import conv_block, upsample


def _offsets(radius: int, dim: int) -> torch.Tensor:
    """``((2 radius + 1)^dim, dim)`` integer offsets in array-axis order, as floats."""
    grid = itertools.product(range(-radius, radius + 1), repeat=dim)
    return torch.tensor(list(grid), dtype=torch.float32)


def warp_features(moving: torch.Tensor, field_voxels: torch.Tensor,
                  padding: str = "zeros") -> torch.Tensor:
    """``moving (B, C, *Q)`` sampled linearly at x + ``field_voxels (B, dim, *Q)``, the
    field's components x, y(, z) in voxels of ``Q``; outside, zero or (``padding="border"``)
    the nearest face's value."""
    shape = moving.shape[2:]
    axes = [torch.arange(n, device=moving.device, dtype=torch.float32) for n in shape]
    base = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], -1)  # x, y(, z) last
    points = base + torch.movedim(field_voxels.float(), 1, -1)
    sizes = torch.tensor(shape[::-1], device=moving.device, dtype=torch.float32)
    grid = (2 * points + 1) / sizes - 1  # align_corners=False
    return F.grid_sample(moving, grid.to(moving.dtype), mode="bilinear",
                         padding_mode=padding, align_corners=False)


BLOCK = 4  # fixed voxels per block side in the cost volume's matrix products
# Adam moves a parameter by at most about its learning rate a step: the full-resolution
# sharpness, which starts at 0, is learned in units of 100, so that at a learning rate of 2e-4
# it can reach a coarse level's (about 12) in hundreds of steps, not tens of thousands
FULL_SHARPNESS_UNIT = 100.0


def _offset_index(radius: int, dim: int, block: int) -> torch.Tensor:
    """``(block^dim, K)``: for each voxel of a block (row-major) and each offset of
    :func:`_offsets`, the row-major index of the moving voxel it reads within the block's
    neighbourhood of ``block + 2 radius`` voxels per axis."""
    side = block + 2 * radius
    voxels = torch.tensor(list(itertools.product(range(block), repeat=dim)))
    reads = voxels[:, None] + radius + _offsets(radius, dim).long()[None]  # (block^dim, K, dim)
    strides = torch.tensor([side ** (dim - 1 - a) for a in range(dim)])
    return (reads * strides).sum(-1)


def block_cost_volume(fixed: torch.Tensor, moving: torch.Tensor, radius: int,
                      block: int = BLOCK) -> torch.Tensor:
    """The cost volume of :class:`CostVolume`, ``(B, K, *Q)``, from matrix products: the
    fixed grid is cut into blocks of ``block^dim`` voxels; one batched product gives every
    block voxel's dot product with every moving voxel within ``radius`` of the block, and
    each voxel's ``K`` offsets are gathered from it. At least float32, whatever the autocast.
    One product per offset is bound by memory traffic: with these, the network's pass is
    1.1-1.5x faster on the CPU (benchmarks/corrnet_step.py)."""
    b, c, *shape = fixed.shape
    dim, side = len(shape), block + 2 * radius
    pads = [-n % block for n in shape]
    blocks = [(n + p) // block for n, p in zip(shape, pads, strict=True)]
    dtype = torch.promote_types(fixed.dtype, torch.float32)
    fixed = F.pad(fixed.to(dtype), [q for p in reversed(pads) for q in (0, p)])
    moving = F.pad(moving.to(dtype), [q for p in reversed(pads) for q in (radius, radius + p)])
    # (B, *blocks, *block, C): each block's voxels, channels last
    fixed = fixed.reshape(b, c, *[s for n in blocks for s in (n, block)])
    fixed = fixed.permute(0, *range(2, 2 + 2 * dim, 2), *range(3, 3 + 2 * dim, 2), 1)
    for axis in range(dim):  # (B, C, *blocks, *side): each block's neighbourhood, a view
        moving = moving.unfold(2 + axis, side, block)
    moving = moving.permute(0, *range(2, 2 + dim), 1, *range(2 + dim, 2 + 2 * dim))
    index = _offset_index(radius, dim, block).to(fixed.device)
    cost = fixed.new_empty(b, *blocks, block**dim, index.shape[1])
    with torch.autocast(fixed.device.type, enabled=False):
        for row in range(blocks[0]):  # one row of blocks at a time bounds the products' memory
            products = torch.bmm(fixed[:, row].reshape(-1, block**dim, c),
                                 moving[:, row].reshape(-1, c, side**dim))
            cost[:, row] = torch.gather(products, 2, index.expand(len(products), -1, -1)
                                        ).reshape(cost[:, row].shape)
    # (B, *blocks, block^dim, K) -> (B, K, *Q)
    cost = cost.reshape(b, *blocks, *[block] * dim, -1)
    order = [a for axis in range(1, 1 + dim) for a in (axis, axis + dim)]
    cost = cost.permute(0, 1 + 2 * dim, *order).reshape(b, -1, *[n * block for n in blocks])
    return cost[(slice(None), slice(None), *(slice(0, n) for n in shape))]


class CostVolume(torch.autograd.Function):
    """apply(fixed ``(B, C, *Q)``, moving ``(B, C, *Q)``, radius) -> ``(B, K, *Q)``:
    fixed(x) . moving(x + o) for the ``K = (2 radius + 1)^dim`` offsets ``o`` of
    :func:`_offsets`, zero beyond the grid; forward by :func:`block_cost_volume`. Autograd
    through one slice per offset would fill and add a whole padded gradient for each; this
    backward accumulates every offset's share in place, in one buffer
    (``benchmarks/corrnet_step.py``)."""

    @staticmethod
    def forward(ctx, fixed, moving, radius):
        ctx.save_for_backward(fixed, moving)
        ctx.radius = radius
        return block_cost_volume(fixed, moving, radius).to(fixed.dtype)

    @staticmethod
    def backward(ctx, grad):
        fixed, moving = ctx.saved_tensors
        radius, shape = ctx.radius, fixed.shape[2:]
        padded = F.pad(moving, [radius] * (2 * len(shape)))
        grad_fixed, grad_padded = torch.zeros_like(fixed), torch.zeros_like(padded)
        for k, offset in enumerate(_offsets(radius, len(shape)).long().tolist()):
            window = (slice(None), slice(None),
                      *(slice(radius + o, radius + o + n) for o, n in zip(offset, shape,
                                                                          strict=True)))
            grad_fixed.addcmul_(grad[:, k:k + 1], padded[window])
            grad_padded[window].addcmul_(grad[:, k:k + 1], fixed)
        inner = (slice(None), slice(None), *(slice(radius, radius + n) for n in shape))
        return grad_fixed, grad_padded[inner], None


class CorrNet(nn.Module):
    """forward(pair ``(B, 2, *S)``) -> ``(B, dim, *S/2)`` mm (``(B, dim, *S)`` with
    ``full_width``); :meth:`dense` -> ``(B, dim, *S)``."""

    def __init__(self, dim: int = 3, width: float = 1.0, norm: str = "group", radius: int = 3,
                 fine_radius: int = 0, full_width: int = 0, full_radius: int = 0,
                 full_match_width: int = 0):
        super().__init__()
        if full_radius and not full_width:
            raise ValueError("full_radius needs full_width channels")
        self.dim, self.radius, self.fine_radius = dim, radius, fine_radius
        self.full_radius = full_radius
        w = [max(4, round(n * width)) for n in (16, 24, 32, 24, 32)]
        conv = nn.Conv3d if dim == 3 else nn.Conv2d
        self.features_half = nn.Sequential(conv_block(dim, 1, w[0], norm=norm),
                                  conv_block(dim, w[0], w[1], 2, norm),
                                  conv_block(dim, w[1], w[1], norm=norm))
        self.features_quarter = nn.Sequential(conv_block(dim, w[1], w[2], 2, norm),
                                     conv_block(dim, w[2], w[2], norm=norm), conv(w[2], w[3], 1))
        self.sharpness = nn.Parameter(torch.tensor(10.0))
        self.refine = nn.Sequential(conv_block(dim, dim + 2 * w[1], w[4], norm=norm),
                                    conv_block(dim, w[4], w[4], norm=norm),
                                    conv(w[4], dim, 3, 1, 1))
        nn.init.normal_(self.refine[-1].weight, std=1e-3)  # start at the cost volume's field
        nn.init.zeros_(self.refine[-1].bias)
        self.register_buffer("offsets", _offsets(radius, dim))
        if fine_radius:
            self.features_fine = conv(w[1], w[3], 1)
            # near-uniform at first: the fine offset starts near 0, at the coarse field
            self.fine_sharpness = nn.Parameter(torch.tensor(1.0))
            self.register_buffer("fine_offsets", _offsets(fine_radius, dim))
        self.refine_full = None
        if full_width:
            self.refine_full = nn.Sequential(conv_block(dim, 2 + dim, full_width, norm="none"),
                                             conv_block(dim, full_width, full_width, norm="none"),
                                             conv(full_width, dim, 3, 1, 1))
            nn.init.normal_(self.refine_full[-1].weight, std=1e-3)  # start at the 1/2 field
            nn.init.zeros_(self.refine_full[-1].bias)
        if full_radius:
            self.features_full = conv(1, full_match_width or full_width, 3, 1, 1, bias=False)
            self.full_sharpness = nn.Parameter(torch.tensor(0.0))  # FULL_SHARPNESS_UNITs
            self.register_buffer("full_offsets", _offsets(full_radius, dim))
        self.register_buffer("voxel_mm", torch.tensor(1.0))  # the training spacing

    def cost_volume(self, fixed: torch.Tensor, moving: torch.Tensor,
                    offsets: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, *Q)`` features -> ``(B, K, *Q)``: fixed(x) . moving(x + offset_k) for the
        ``(K, dim)`` ``offsets`` in array-axis order (default: the coarse ``offsets``, every
        offset of up to a radius per axis), the moving features zero beyond their grid."""
        offsets = self.offsets if offsets is None else offsets
        return CostVolume.apply(fixed, moving, int(offsets.abs().max()))

    def expected_offset(self, fixed: torch.Tensor, moving: torch.Tensor, offsets: torch.Tensor,
                        sharpness: torch.Tensor) -> torch.Tensor:
        """Unit-length ``(B, C, *Q)`` features -> ``(B, dim, *Q)``: the offset (x, y(, z), in
        cells of ``Q``) expected under the softmax of the sharpened cost volume."""
        weights = torch.softmax(self.cost_volume(fixed.float(), moving.float(), offsets)
                                * sharpness, 1)
        return torch.einsum("bk...,kc->bc...", weights, offsets).flip(1)

    def full_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 1, *S)`` -> ``(N, C, *S)`` unit-length features of the full-resolution cost
        volume: the filters less their mean, over the image extended by its border voxels,
        so that adding a constant to an image leaves them unchanged."""
        weight = self.features_full.weight
        zero_sum = weight - weight.mean(dim=tuple(range(1, weight.dim())), keepdim=True)
        convolve = F.conv3d if self.dim == 3 else F.conv2d
        return F.normalize(convolve(F.pad(images, (1,) * (2 * self.dim), mode="replicate"),
                                    zero_sum), dim=1)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        b = pair.shape[0]
        half = self.features_half(torch.cat([pair[:, :1], pair[:, 1:]]))  # moving, then fixed
        quarter = F.normalize(self.features_quarter(half), dim=1)
        scale = 4 * self.voxel_mm
        field = self.expected_offset(quarter[b:], quarter[:b], self.offsets,
                                     self.sharpness) * scale  # mm
        mode = "trilinear" if self.dim == 3 else "bilinear"
        field = F.interpolate(field, size=half.shape[2:], mode=mode, align_corners=False)
        moving_half = half[:b]
        if self.fine_radius:
            moving_half = warp_features(moving_half, field / (2 * self.voxel_mm))
            fine = F.normalize(self.features_fine(torch.cat([moving_half, half[b:]])), dim=1)
            field = field + self.expected_offset(fine[b:], fine[:b], self.fine_offsets,
                                                 self.fine_sharpness) * (2 * self.voxel_mm)
        features = torch.cat([field / scale, moving_half, half[b:]], 1)
        field = field + self.refine(features.to(half.dtype)).float()
        if self.refine_full is None:
            return field
        field = upsample(field, pair.shape[2:])
        if self.full_radius:
            full = self.full_features(torch.cat([pair[:, :1], pair[:, 1:]]))
            moving_full = warp_features(full[:b], field / self.voxel_mm, padding="border")
            sharpness = self.full_sharpness * FULL_SHARPNESS_UNIT
            field = field + self.expected_offset(full[b:], moving_full, self.full_offsets,
                                                 sharpness) * self.voxel_mm
        warped = warp_features(pair[:, :1], field / self.voxel_mm, padding="border")
        features = torch.cat([pair[:, 1:], warped, field / scale], 1)
        return field + self.refine_full(features.to(half.dtype)).float()

    def dense(self, pair: torch.Tensor) -> torch.Tensor:
        """``(B, 2, *S)`` -> ``(B, dim, *S)`` mm (:func:`~regnet.network.unet.upsample` of
        the half-resolution field, unless it is refined at full resolution)."""
        return upsample(self(pair), pair.shape[2:])
