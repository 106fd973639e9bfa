"""Synthetic scans from random label maps (the SynthMorph idea, Hoffmann et al., IEEE TMI 2022):
shapes and contrasts no scanner made, so that a network trained on them cannot lean on any one
modality's appearance.

A label map is the argmax over ``n_labels`` smooth random fields inside a random ellipsoid
("the body"; label 0 outside it). Each label gets a random mean intensity and a random
texture; the image is then blurred (partial volume) and multiplied by a smooth bias field,
and scaled to 0..1000 like an uncalibrated MR. Such a scan is a source image like any other:
``regnet generate`` deforms it with the seed's fields (``scripts/synthetic_scans.py`` writes
them).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

INTENSITY_MAX = 1000.0


def _smooth_noise(channels: int, shape_zyx, scale_vox: float,
                  rng: np.random.Generator) -> torch.Tensor:
    """``(channels, *shape_zyx)`` Gaussian noise drawn every ``scale_vox`` voxels and
    interpolated (trilinear) to every voxel."""
    coarse = [max(2, int(np.ceil(n / scale_vox)) + 1) for n in shape_zyx]
    noise = torch.from_numpy(rng.standard_normal([channels] + coarse).astype(np.float32))
    return F.interpolate(noise[None], size=tuple(shape_zyx), mode="trilinear",
                         align_corners=True)[0]


def random_label_map(shape_zyx, n_labels: int, rng: np.random.Generator,
                     scale_vox: float = 10.0) -> np.ndarray:
    """``(D, H, W)`` int16 labels 1..n_labels inside a random ellipsoid filling 60-90% of each
    axis, 0 outside; each label a union of blobs about ``scale_vox`` voxels across."""
    labels = (_smooth_noise(n_labels, shape_zyx, scale_vox, rng).argmax(0) + 1).numpy()
    axes = [np.linspace(-1.0, 1.0, n) / rng.uniform(0.6, 0.9) for n in shape_zyx]
    radius = sum(a ** 2 for a in np.meshgrid(*axes, indexing="ij", sparse=True))
    labels[radius > 1.0] = 0
    return labels.astype(np.int16)


def render(labels: np.ndarray, rng: np.random.Generator, texture_max: float = 0.08,
           blur_max_vox: float = 1.0, bias_max: float = 0.3) -> np.ndarray:
    """``(D, H, W)`` float32 image in 0..1000 of a label map: a random mean in [0.05, 1] per
    label (0 for the background), fine texture of a random strength up to ``texture_max``
    per label, a Gaussian blur up to ``blur_max_vox`` and a smooth multiplicative bias field
    within ``1 ± bias_max``."""
    n = int(labels.max()) + 1
    means = np.concatenate([[0.0], rng.uniform(0.05, 1.0, n - 1)]).astype(np.float32)
    strength = np.concatenate([[0.0], rng.uniform(0.0, texture_max, n - 1)]).astype(np.float32)
    texture = gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 0.7)
    image = means[labels] + strength[labels] * texture / max(float(texture.std()), 1e-6)
    image = gaussian_filter(image, rng.uniform(0.0, blur_max_vox))
    bias = _smooth_noise(1, labels.shape, max(labels.shape) / 2, rng)[0].numpy()
    image *= 1.0 + bias_max * np.tanh(bias)
    return (INTENSITY_MAX * np.clip(image, 0.0, None)).astype(np.float32)


def synthetic_scan(size_xyz, spacing_mm: float, rng: np.random.Generator,
                   n_labels: int = 16, scale_mm: float = 20.0) -> sitk.Image:
    """A rendered random label map of ``size_xyz`` voxels at isotropic ``spacing_mm``, blobs
    about ``scale_mm`` across."""
    shape_zyx = tuple(int(n) for n in reversed(size_xyz))
    labels = random_label_map(shape_zyx, n_labels, rng, scale_mm / spacing_mm)
    image = sitk.GetImageFromArray(render(labels, rng))
    image.SetSpacing([float(spacing_mm)] * len(shape_zyx))
    return image
