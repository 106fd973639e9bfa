"""A dense network (beyond the seed): a small U-Net that predicts the whole DVF at once.

The seed's RegNet regresses one centre voxel per patch, so a dense field costs one patch
evaluation per output point. This U-Net sees the whole image (or a training crop) and predicts
the DVF on a stride-2 lattice, upsampled linearly to every voxel: 0.6 s for a 96x112x112 pair
on 2 CPU cores. Its coarsest level is 1/16 of the
input, so one output sees more than 100 voxels around it. Batch normalisation as in the seed's
network by default (at inference its running statistics apply, so a prediction depends on
neither the batch nor the crop); ``norm: instance|group|none`` replaces it (instance and
group normalisation predict a larger image in crops: :func:`predict_whole`). Train it with
``network: {name: unet, crop: 64}`` (docs/training.md says how far CPU training got: it needs
far more steps than the patch network to leave the identity).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 4  # stride-2 downsamplings: inputs must be multiples of 2**LEVELS


def _norm(kind: str, dim: int, channels: int) -> nn.Module:
    """The normalisation after each convolution: batch statistics (running statistics at
    inference), per-sample instance or group (4 channels a group) statistics, or none."""
    if kind == "batch":
        return (nn.BatchNorm3d if dim == 3 else nn.BatchNorm2d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d)(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 4), channels)
    return nn.Identity()


def conv_block(dim: int, cin: int, cout: int, stride: int = 1, norm: str = "batch"
          ) -> nn.Sequential:
    conv = nn.Conv3d if dim == 3 else nn.Conv2d
    return nn.Sequential(conv(cin, cout, 3, stride, 1, bias=norm != "batch"),
                         _norm(norm, dim, cout), nn.LeakyReLU(0.2, inplace=True))


class UNet(nn.Module):
    """forward(pair ``(B, 2, D, H, W)``, channels (moving, fixed), lengths multiples of 16)
    -> ``(B, 3, D/2, H/2, W/2)`` displacement in mm (x, y, z) at the centres of 2x2x2 blocks;
    :meth:`dense` upsamples it to ``(B, 3, D, H, W)``. 2D alike with ``(B, 2, H, W)``."""

    def __init__(self, dim: int = 3, width: float = 1.0, norm: str = "batch"):
        super().__init__()
        self.dim = dim
        w = [max(4, round(n * width)) for n in (16, 32, 32, 64, 64)]
        self.stem = conv_block(dim, 2, w[0], norm=norm)
        self.down = nn.ModuleList(conv_block(dim, w[i], w[i + 1], 2, norm) for i in range(LEVELS))
        self.bottom = conv_block(dim, w[4], w[4], norm=norm)
        # decoder from 1/16 back to 1/2, each level joined with the encoder's of that level
        self.up = nn.ModuleList(conv_block(dim, w[i + 1] + w[i], w[i], norm=norm)
                                for i in range(LEVELS - 1, 0, -1))
        self.refine = conv_block(dim, w[1], w[1], norm=norm)
        self.out = (nn.Conv3d if dim == 3 else nn.Conv2d)(w[1], dim, 3, 1, 1)
        nn.init.normal_(self.out.weight, std=1e-3)  # start near the zero field
        nn.init.zeros_(self.out.bias)

    def forward(self, pair: torch.Tensor, low: torch.Tensor | None = None) -> torch.Tensor:
        skips = [self.stem(pair)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = self.bottom(skips.pop())
        mode = "trilinear" if self.dim == 3 else "bilinear"
        for up in self.up:
            skip = skips.pop()
            x = up(torch.cat([F.interpolate(x, size=skip.shape[2:], mode=mode,
                                            align_corners=False), skip], dim=1))
        return self.out(self.refine(x))

    def dense(self, pair: torch.Tensor) -> torch.Tensor:
        """``(B, 2, *S)`` -> ``(B, dim, *S)`` mm (:func:`upsample` of the prediction)."""
        return upsample(self(pair), pair.shape[2:])


def upsample(half: torch.Tensor, shape) -> torch.Tensor:
    """The stride-2 prediction ``(B, C, *S/2)`` linearly to ``(B, C, *S)``, half-voxel
    centred (``align_corners=False``: output block centres sit between input voxels); a
    prediction already at ``shape`` is returned as it is."""
    if tuple(half.shape[2:]) == tuple(shape):
        return half
    return F.interpolate(half, size=tuple(shape), mode="trilinear" if half.dim() == 5
                         else "bilinear", align_corners=False)


CROPS_PER_PASS = 4  # crops of predict_whole batched into one forward pass


@torch.no_grad()
def predict_whole(model: nn.Module, moving: np.ndarray, fixed: np.ndarray, device,
                  crop: int | None = None) -> np.ndarray:
    """Dense ``dvf_mm`` ``(D, H, W, C)`` from a dense network (:mod:`regnet.network.unet`)
    in one pass over the whole image, padded at the far faces by edge replication to a
    multiple of ``2**LEVELS`` voxels per axis.

    ``crop``: along each axis longer than ``crop`` voxels, predict instead in crops of
    ``crop`` voxels at most half a crop apart, each prediction weighted by a tent that falls
    linearly from its centre to its faces. A network whose normalisation takes its statistics
    over its input (instance or group) then sees inputs of the extent it was trained on, and
    each voxel's field averages up to ``2**ndim`` predictions."""
    model.eval()
    if crop is None or all(n <= crop for n in moving.shape):
        return _one_pass(model, np.stack([moving, fixed])[None], device)[0]
    boxes = list(itertools.product(*(_crop_starts(n, crop) for n in moving.shape)))
    sizes = [min(n, crop) for n in moving.shape]
    tent = np.ones(sizes, np.float32)
    for axis, size in enumerate(sizes):
        ramp = np.minimum(np.arange(size) + 1, size - np.arange(size)).astype(np.float32)
        tent = tent * ramp.reshape([-1 if a == axis else 1 for a in range(moving.ndim)])
    total = np.zeros(moving.shape + (moving.ndim,), np.float32)
    weight = np.zeros(moving.shape, np.float32)
    for first in range(0, len(boxes), CROPS_PER_PASS):
        slices = [tuple(slice(a, a + n) for a, n in zip(box, sizes, strict=True))
                  for box in boxes[first:first + CROPS_PER_PASS]]
        pairs = np.stack([np.stack([moving[sl], fixed[sl]]) for sl in slices])
        for sl, field in zip(slices, _one_pass(model, pairs, device), strict=True):
            total[sl] += field * tent[..., None]
            weight[sl] += tent
    return total / weight[..., None]


def _crop_starts(n: int, crop: int) -> list[int]:
    """Starts of crops of ``crop`` voxels (the whole axis if shorter) covering ``n`` voxels,
    evenly spaced at most ``crop // 2`` apart."""
    if n <= crop:
        return [0]
    gaps = -(-(n - crop) // max(crop // 2, 1))
    return [round(i * (n - crop) / gaps) for i in range(gaps + 1)]


def _one_pass(model: nn.Module, pairs: np.ndarray, device) -> np.ndarray:
    """``(N, *S, C)`` fields of ``pairs`` ``(N, 2, *S)`` (moving, fixed) in one forward pass,
    padded at the far faces by edge replication to a multiple of ``2**LEVELS`` per axis."""
    shape = pairs.shape[2:]
    pad = [(0, 0), (0, 0)] + [(0, -n % 2**LEVELS) for n in shape]
    batch = torch.from_numpy(np.pad(pairs, pad, mode="edge").astype(np.float32)).to(device)
    out = model.dense(batch).float()[(slice(None), slice(None)) + tuple(slice(0, n)
                                                                        for n in shape)]
    return np.ascontiguousarray(out.permute(0, *range(2, len(shape) + 2), 1).cpu().numpy())
