"""Carry images, label maps and points through a DVF.

A DVF ``u`` on the fixed grid maps fixed points into the moving image: an image that lives in
moving space comes onto the fixed grid as ``out(x) = image(x + u(x))``, and a fixed-space
point ``p`` goes to ``p + u(p)`` in moving space.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from regnet.io.dvf import displacement_transform

# --interpolation: "label" interpolates each label's indicator linearly and keeps the most
# likely label (ITK's LabelImageGenericInterpolateImageFunction): smooth boundaries, no new
# values; "bspline" is cubic
INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor,
                 "bspline": sitk.sitkBSpline, "label": sitk.sitkLabelLinear}


def warp_image(moving: sitk.Image, dvf_mm: np.ndarray, fixed_grid: sitk.Image,
               default: float = 0.0, interpolator=sitk.sitkLinear,
               pixel_type=sitk.sitkFloat32) -> sitk.Image:
    """Resample ``moving`` onto ``fixed_grid`` through ``dvf_mm`` (grid frame, fixed grid).

    ``moving`` may lie on any grid: the lookup is in physical space. ``pixel_type``
    ``sitk.sitkUnknown`` keeps ``moving``'s own (label maps, vector images)."""
    transform = displacement_transform(dvf_mm, fixed_grid)
    return sitk.Resample(moving, fixed_grid, transform, interpolator, default, pixel_type)


def points_inside(points_mm: np.ndarray, grid: sitk.Image) -> np.ndarray:
    """``(N,)`` bool: which physical points lie within half a voxel of ``grid``'s outermost
    voxel centres, where ITK interpolates a field (beyond, its transforms move nothing)."""
    index = np.array([grid.TransformPhysicalPointToContinuousIndex(tuple(map(float, p)))
                      for p in points_mm]).reshape(len(points_mm), grid.GetDimension())
    size = np.asarray(grid.GetSize(), dtype=np.float64)
    return np.all((index >= -0.5) & (index <= size - 0.5), axis=1)


def map_points(points_mm: np.ndarray, dvf_mm: np.ndarray, grid: sitk.Image) -> np.ndarray:
    """``(N, dim)`` physical points ``p + u(p)``, ``u`` linearly interpolated
    (``sitk.DisplacementFieldTransform.TransformPoint``); a point beyond the field stays
    where it is (see :func:`points_inside`)."""
    transform = displacement_transform(dvf_mm, grid)
    return np.array([transform.TransformPoint(tuple(map(float, p))) for p in points_mm],
                    dtype=np.float64).reshape(np.shape(points_mm))
