"""Training crops for dense networks (beyond the seed): whole DVF targets, not centre voxels.

A dense network (:mod:`regnet.network.unet`) learns from crops of ``crop`` voxels per axis cut
around the same class-balanced centres, from the same chunks, as the seed's patches
(:class:`~regnet.sampling.stream.PatchStream`): class balance, chunked reading ahead and exact
resume carry over unchanged. A crop that would leave the image is shifted inside it; an image
smaller than the crop is padded by edge replication and the padding gets zero loss weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from regnet.intensity import random_contrast
from regnet.sampling.stream import LoadedPair, PatchStream


@dataclass
class CropBatch:
    """pair ``(B, 2, S, S, S)`` (moving, fixed), target ``(B, 3, S, S, S)`` mm (x, y, z),
    weight ``(B, 1, S, S, S)`` (1 inside the image, 0 in padding), label ``(B,)``."""

    pair: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    label: torch.Tensor


def crop_box(centre, shape, size: int) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """The array box of a ``size`` crop around ``centre``, shifted inside ``shape``, and the
    padding ``[(before, after)]`` per axis that brings an axis shorter than ``size`` to it."""
    box, pad = [], []
    for c, n in zip(centre, shape, strict=True):
        if n >= size:
            start = int(min(max(c - size // 2, 0), n - size))
            box.append(slice(start, start + size))
            pad.append((0, 0))
        else:
            box.append(slice(0, n))
            pad.append(((size - n) // 2, size - n - (size - n) // 2))
    return tuple(box), pad


def flip_permute_field(images: np.ndarray, field: np.ndarray, flips, perm) -> tuple:
    """Mirror array axes ``flips`` (bool per axis) then permute them (new axis i = old axis
    ``perm[i]``) of ``images`` ``(C, *S)`` and of the displacement ``field`` ``(ndim, *S)``
    (components x, y(, z)): the field's components follow the axes, mirrored ones change sign,
    so that ``fixed(x) = moving(x + u(x))`` still holds."""
    ndim = field.shape[0]
    u = field[::-1]  # components in array-axis order
    if flips is not None and flips.any():
        axes = tuple(1 + a for a in range(ndim) if flips[a])
        images, u = np.flip(images, axes), np.flip(u, axes)
        u = u * np.where(flips, -1.0, 1.0).astype(np.float32).reshape((ndim,) + (1,) * ndim)
    if perm is not None:
        order = (0, *(1 + np.asarray(perm)))
        images, u = images.transpose(order), u.transpose(order)[np.asarray(perm)]
    return np.ascontiguousarray(images), np.ascontiguousarray(u[::-1])


def cut_crops(pairs: list[LoadedPair], which: np.ndarray, centres: np.ndarray,
              labels: np.ndarray, size: int, flips=None, perms=None, contrast=None,
              contrast_options: dict | None = None) -> CropBatch:
    """Crops of ``size`` voxels around ``centres[i]`` of pair ``which[i]``, optionally with a
    random contrast per image (``contrast``: ``(N, 2)`` seeds; ``contrast_options`` for
    :func:`~regnet.intensity.random_contrast`) and flips/permutations."""
    images, targets, weights = [], [], []
    for k, centre in enumerate(centres):
        p = pairs[which[k]]
        box, pad = crop_box(centre, p.fixed.shape, size)
        two = np.stack([p.moving[box], p.fixed[box]])
        if contrast is not None:
            two = np.stack([random_contrast([two[ch]], np.random.default_rng(contrast[k, ch]),
                                            **(contrast_options or {}))[0] for ch in range(2)])
        field = np.moveaxis(p.dvf_mm[box], -1, 0)
        weight = np.ones((1,) + two.shape[1:], np.float32)
        if any(sum(w) for w in pad):
            two = np.pad(two, [(0, 0)] + pad, mode="edge")
            field = np.pad(field, [(0, 0)] + pad, mode="edge")
            weight = np.pad(weight, [(0, 0)] + pad)
        if flips is not None or perms is not None:
            flip = None if flips is None else flips[k]
            perm = None if perms is None else perms[k]
            both, field = flip_permute_field(np.concatenate([two, weight]), field, flip, perm)
            two, weight = both[:2], both[2:]
        images.append(two)
        targets.append(field)
        weights.append(weight)
    return CropBatch(torch.from_numpy(np.stack(images).astype(np.float32)),
                     torch.from_numpy(np.stack(targets).astype(np.float32)),
                     torch.from_numpy(np.stack(weights)),
                     torch.from_numpy(labels.astype(np.int64)))


class CropStream(PatchStream):
    """:class:`PatchStream` that yields :class:`CropBatch` crops of ``crop`` voxels."""

    def __init__(self, *args, crop: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        self.crop = crop

    def cut(self, loaded, which, centres, labels, flips, perms, contrast) -> CropBatch:
        return cut_crops(loaded, which, centres, labels, self.crop, flips, perms, contrast,
                         self.augment_intensity)
