"""The seed's network (Figure 1), layer for layer, in 3D and 2D.

Every convolution is unpadded ("valid") and followed by batch normalisation and ReLU, except the
output. At each scale the moving and fixed channels run through separate pathways that are then
concatenated. For one training patch the output is ``(B, C, 1, 1, 1)``; applied to a larger
input it is fully convolutional and predicts on a stride-2 lattice of centres (see
:mod:`regnet.inference.dense`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(dim: int):
    return nn.Conv3d if dim == 3 else nn.Conv2d


def conv_bn_relu(cin: int, cout: int, dim: int, kernel: int = 3) -> nn.Sequential:
    bn = nn.BatchNorm3d if dim == 3 else nn.BatchNorm2d
    return nn.Sequential(_conv(dim)(cin, cout, kernel, bias=False), bn(cout), nn.ReLU(inplace=True))


def stack(cin: int, widths, dim: int) -> tuple[nn.Sequential, int]:
    layers = []
    for w in widths:
        layers.append(conv_bn_relu(cin, w, dim))
        cin = w
    return nn.Sequential(*layers), cin


def _w(n: int, width: float) -> int:
    return max(1, round(n * width))


class Pathways(nn.Module):
    """Separate moving and fixed pathways (3 x 16 filters each), concatenated: 2*16 channels."""

    def __init__(self, dim: int, width: float):
        super().__init__()
        widths = [_w(16, width)] * 3
        self.moving, c = stack(1, widths, dim)
        self.fixed, _ = stack(1, widths, dim)
        self.out_channels = 2 * c

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.moving(pair[:, :1]), self.fixed(pair[:, 1:2])], dim=1)


class RegNet(nn.Module):
    """Multi-scale (``multi=True``, the seed's) or single-resolution RegNet.

    forward(full ``(B, 2, 29, 29, 29)``, low ``(B, 2, 27, 27, 27)``) -> ``(B, 3, 1, 1, 1)``
    displacement in mm (x, y, z); 2D: ``(B, 2, 29, 29)``, ``(B, 2, 27, 27)`` -> ``(B, 2, 1, 1)``.
    Channels are (moving, fixed). Lengths of larger inputs must follow
    ``full = 29 + 2(m-1)``, ``low = 27 + (m-1)`` for m outputs per axis.
    """

    def __init__(self, dim: int = 3, multi: bool = True, width: float = 1.0):
        super().__init__()
        self.dim, self.multi = dim, multi
        self.full_paths = Pathways(dim, width)
        self.full_merge, c_full = stack(self.full_paths.out_channels,
                                        [_w(25, width), _w(30, width)], dim)
        self.pool = (nn.MaxPool3d if dim == 3 else nn.MaxPool2d)(2, 2)
        channels = c_full
        if multi:
            self.low_paths = Pathways(dim, width)
            self.low_merge, c_low = stack(self.low_paths.out_channels,
                                          [_w(n, width) for n in (25, 25, 25, 30, 30, 30)], dim)
            channels += c_low
        self.head, c = stack(channels, [_w(n, width) for n in (60, 70, 75, 150)], dim)
        self.fc = conv_bn_relu(c, _w(150, width), dim, kernel=1)
        self.out = _conv(dim)(_w(150, width), dim, 1)

    def forward(self, full: torch.Tensor, low: torch.Tensor | None = None,
                stride: int = 1) -> torch.Tensor:
        """``stride`` 2 predicts every second centre per axis (4 voxels apart on a larger
        input): the last 3x3 convolution strides, the 1x1 layers after it see 1/2^n of the
        positions, and the predictions equal those at the same centres with ``stride`` 1."""
        x = self.full_merge(self.full_paths(full))
        x = self.pool(x) if self.training else max_pool2(x)
        if self.multi:
            if low is None:
                raise ValueError("the multi-resolution RegNet needs the low-resolution patch")
            x = torch.cat([x, self.low_merge(self.low_paths(low))], dim=1)
        x = self.head[:-1](x)
        last = self.head[-1]
        conv = F.conv3d if self.dim == 3 else F.conv2d
        x = last[1:](conv(x, last[0].weight, last[0].bias, stride=stride))
        return self.out(self.fc(x))


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2(x2) max pooling with stride 2 of ``(B, C, *S)`` (odd lengths lose their last
    voxel), as the maximum of shifted strided views: the same values as ``max_pool3d``, 1.7x
    faster on a channels-last bf16 map on 2 CPU cores (4x on a contiguous one); no indices,
    so for inference."""
    for axis in range(2, x.dim()):
        even = x.narrow(axis, 0, x.shape[axis] // 2 * 2)
        x = torch.maximum(even[(slice(None),) * axis + (slice(0, None, 2),)],
                          even[(slice(None),) * axis + (slice(1, None, 2),)])
    return x


def concatenated_inputs(multi: bool) -> dict[str, int]:
    """The convolutions whose input is a concatenation of equal pieces, by state-dict key:
    the (moving, fixed) pathways at each scale, then (full-resolution, low-resolution)
    features when ``multi``."""
    pieces = {"full_merge.0.0.weight": 2}
    if multi:
        pieces.update({"low_merge.0.0.weight": 2, "head.0.0.weight": 2})
    return pieces


def narrowed_state(wide: RegNet, narrow: RegNet) -> dict[str, torch.Tensor]:
    """A state dict for ``narrow`` (a RegNet of smaller ``width``, same ``dim`` and ``multi``)
    from ``wide``'s weights: each layer's first channels, a concatenated input's first
    channels of each piece (:func:`concatenated_inputs`). A starting point for training a
    cheaper network, not a substitute for it."""
    source, state = wide.state_dict(), {}
    concatenated = concatenated_inputs(narrow.multi)
    for key, target in narrow.state_dict().items():
        tensor = source[key]
        if tensor.dim() == 0:  # BatchNorm's num_batches_tracked
            state[key] = tensor.clone()
            continue
        tensor = tensor[:target.shape[0]]
        if target.dim() > 1:
            pieces = concatenated.get(key, 1)
            wide_piece, piece = tensor.shape[1] // pieces, target.shape[1] // pieces
            keep = torch.cat([torch.arange(k * wide_piece, k * wide_piece + piece)
                              for k in range(pieces)])
            tensor = tensor[:, keep]
        state[key] = tensor.clone()
    return state


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
