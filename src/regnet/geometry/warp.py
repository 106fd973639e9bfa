"""Warp an image through a DVF: ``moved(x) = moving(x + u(x))`` for every fixed-grid point x."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from regnet.io.dvf import displacement_transform


def warp_image(moving: sitk.Image, dvf_mm: np.ndarray, fixed_grid: sitk.Image,
               default: float = 0.0, interpolator=sitk.sitkLinear,
               pixel_type=sitk.sitkFloat32) -> sitk.Image:
    """Resample ``moving`` onto ``fixed_grid`` through ``dvf_mm`` (grid frame, fixed grid).

    ``moving`` may lie on any grid: the lookup is in physical space.
    """
    transform = displacement_transform(dvf_mm, fixed_grid)
    return sitk.Resample(moving, fixed_grid, transform, interpolator, default, pixel_type)
