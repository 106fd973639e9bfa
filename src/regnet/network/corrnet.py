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
4. upsampled to 1/2 and refined there by three convolutions that see it and both images'
   1/2 features.

Like the U-Net it returns the field at the centres of 2x2(x2) blocks, ``(B, dim, *S/2)`` mm
(x, y(, z)), and :meth:`dense` upsamples it; inputs ``(B, 2, *S)`` (moving, fixed) with
lengths multiples of 4. With ``radius`` 3 it reaches 12 voxels per axis.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from regnet.network.unet import conv_block, upsample


class CorrNet(nn.Module):
    """forward(pair ``(B, 2, *S)``) -> ``(B, dim, *S/2)`` mm; :meth:`dense` -> ``(B, dim, *S)``."""

    def __init__(self, dim: int = 3, width: float = 1.0, norm: str = "group", radius: int = 3):
        super().__init__()
        self.dim, self.radius = dim, radius
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
        offsets = list(itertools.product(range(-radius, radius + 1), repeat=dim))
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.float32))
        self.register_buffer("voxel_mm", torch.tensor(1.0))  # the training spacing

    def cost_volume(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """``(B, C, *Q)`` features -> ``(B, K, *Q)``: fixed(x) . moving(x + offset_k), offsets in
        array-axis order, the moving features zero beyond their grid."""
        r, shape = self.radius, fixed.shape[2:]
        padded = F.pad(moving, [r] * (2 * self.dim))
        costs = []
        for offset in self.offsets.long().tolist():
            window = tuple(slice(r + o, r + o + n) for o, n in zip(offset, shape, strict=True))
            costs.append((fixed * padded[(slice(None), slice(None), *window)]).sum(1))
        return torch.stack(costs, 1)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        b = pair.shape[0]
        half = self.features_half(torch.cat([pair[:, :1], pair[:, 1:]]))  # moving, then fixed
        quarter = F.normalize(self.features_quarter(half), dim=1)
        cost = self.cost_volume(quarter[b:].float(), quarter[:b].float())
        weights = torch.softmax(cost * self.sharpness, 1)
        offset = torch.einsum("bk...,kc->bc...", weights, self.offsets)  # array-axis order
        scale = 4 * self.voxel_mm
        field = offset.flip(1) * scale  # components x, y(, z), mm
        mode = "trilinear" if self.dim == 3 else "bilinear"
        field = F.interpolate(field, size=half.shape[2:], mode=mode, align_corners=False)
        features = torch.cat([field / scale, half[:b], half[b:]], 1)
        return field + self.refine(features.to(half.dtype)).float()

    def dense(self, pair: torch.Tensor) -> torch.Tensor:
        """``(B, 2, *S)`` -> ``(B, dim, *S)`` mm (:func:`~regnet.network.unet.upsample`)."""
        return upsample(self(pair), pair.shape[2:])
