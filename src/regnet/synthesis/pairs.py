"""Deformed images from artificial DVFs: ``deformed(x) = source(x + u(x)) + noise``.

In registration terms the deformed image is the *fixed* image and the source the *moving* one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from regnet.config import SynthesisConfig
from regnet.geometry.warp import warp_image
from regnet.synthesis.fields import PeakRecord, build_dvf, draw_peaks
from regnet.synthesis.motion import BUILDERS, MotionRecord


@dataclass
class ArtificialPair:
    """fixed: the deformed image; dvf_mm: ``(D, H, W, 3)`` on the fixed grid, into the source."""

    fixed: sitk.Image
    dvf_mm: np.ndarray
    record: PeakRecord | MotionRecord


def add_noise(image: sitk.Image, sigma: float, rng: np.random.Generator) -> sitk.Image:
    """Add Gaussian noise of standard deviation ``sigma`` (intensity units)."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array += rng.normal(0.0, sigma, size=array.shape).astype(np.float32)
    noisy = sitk.GetImageFromArray(array)
    noisy.CopyInformation(image)
    return noisy


def make_pair(source: sitk.Image, frequency: int, config: SynthesisConfig,
              rng: np.random.Generator) -> ArtificialPair:
    """The seed's pair for one D (0-2; 3-5 from :mod:`regnet.synthesis.motion`): draw the
    field's parameters, build the DVF, resample (linear, default 0), add noise of ``sigmaN``."""
    if frequency in BUILDERS:  # ours: respiratory, mixed, affine
        dvf_mm, record = BUILDERS[frequency](source, config, rng)
    else:
        shape_zyx = tuple(reversed(source.GetSize()))
        record = draw_peaks(shape_zyx, frequency, config, rng)
        dvf_mm = build_dvf(record, shape_zyx)
    deformed = warp_image(source, dvf_mm, source, default=0.0)
    return ArtificialPair(add_noise(deformed, config.sigmaN, rng), dvf_mm, record)


def make_next_fixed(source: sitk.Image, config: SynthesisConfig,
                    rng: np.random.Generator) -> sitk.Image:
    """A Dsmooth > 0 source: ``source`` through a low-frequency field of amplitude
    ``DsmoothMaxDeform`` mm, plus small noise ``sigmaNL``. It feeds more pairs."""
    shape_zyx = tuple(reversed(source.GetSize()))
    record = draw_peaks(shape_zyx, 0, config, rng, max_deform_mm=config.DsmoothMaxDeform)
    dvf_mm = build_dvf(record, shape_zyx)
    default = float(sitk.GetArrayViewFromImage(source).min())
    smooth = warp_image(source, dvf_mm, source, default=default)
    return add_noise(smooth, config.sigmaNL, rng)
