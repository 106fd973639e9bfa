"""Carry images, label maps and points through a DVF.

A DVF ``u`` on the fixed grid maps fixed points into the moving image: an image that lives in
moving space comes onto the fixed grid as ``out(x) = image(x + u(x))``, and a fixed-space
point ``p`` goes to ``p + u(p)`` in moving space.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from regnet.io.dvf import check_dvf_shape, displacement_transform

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
    ``sitk.sitkUnknown`` keeps ``moving``'s own (label maps, vector images).

    A scalar image with linear interpolation into float32 (every warp inside a registration)
    takes :func:`_warp_linear`; everything else ``sitk.Resample`` through a
    ``DisplacementFieldTransform``."""
    if (interpolator == sitk.sitkLinear and pixel_type == sitk.sitkFloat32
            and moving.GetNumberOfComponentsPerPixel() == 1):
        return _warp_linear(moving, dvf_mm, fixed_grid, default)
    transform = displacement_transform(dvf_mm, fixed_grid)
    return sitk.Resample(moving, fixed_grid, transform, interpolator, default, pixel_type)


def _warp_linear(moving: sitk.Image, dvf_mm: np.ndarray, fixed_grid: sitk.Image,
                 default: float) -> sitk.Image:
    """``sitk.Resample``'s linear warp (tested equal), in float32 with torch's threaded
    ``grid_sample``: no float64 copy of the field, 0.65 s against 0.8-1.1 s at 256x256x160.

    The continuous index in ``moving`` of ``x + u(x)`` is affine in the voxel index ``i`` and
    in ``u``: ``A S_f i + A u + b`` with ``A = S_m^-1 D_m^T D_f`` and ``b = S_m^-1 D_m^T
    (O_f - O_m)``. As ITK's linear interpolator, it clamps to the border within half a voxel
    beyond the outermost voxel centres and gives ``default`` farther out."""
    import torch  # here, not above: `regnet --help` needs no torch
    import torch.nn.functional as F

    check_dvf_shape(dvf_mm, fixed_grid)
    n = fixed_grid.GetDimension()
    d_f = np.asarray(fixed_grid.GetDirection(), np.float64).reshape(n, n)
    d_m = np.asarray(moving.GetDirection(), np.float64).reshape(n, n)
    to_index = (d_m.T / np.asarray(moving.GetSpacing(), np.float64)[:, None])
    a = to_index @ d_f
    a_s = a * np.asarray(fixed_grid.GetSpacing(), np.float64)[None, :]
    b = to_index @ (np.subtract(fixed_grid.GetOrigin(), moving.GetOrigin()))
    shape = dvf_mm.shape[:-1]
    u = torch.from_numpy(np.ascontiguousarray(dvf_mm, dtype=np.float32))
    voxel = [torch.arange(m, dtype=torch.float32).view([m if k == axis else 1
                                                        for k in range(n)])
             for axis, m in enumerate(shape)]  # array axes (z, y, x)
    size_m = moving.GetSize()
    grid = torch.empty(shape + (n,), dtype=torch.float32)
    inside = torch.ones(shape, dtype=torch.bool)
    for c in range(n):  # moving index component c (x, y, z order)
        index = torch.full(shape, float(b[c]))
        for k in range(n):  # k: x, y(, z) of the fixed grid; array axis n - 1 - k
            if a_s[c, k] != 0.0:  # (an axis-aligned grid has one term of each kind)
                index.add_(voxel[n - 1 - k], alpha=float(a_s[c, k]))
            if a[c, k] != 0.0:
                index.add_(u[..., k], alpha=float(a[c, k]))
        inside &= index.ge(-0.5)
        inside &= index.lt(size_m[c] - 0.5)
        grid[..., c] = index.mul_(2.0 / max(size_m[c] - 1, 1)).sub_(1.0)
    image = torch.from_numpy(sitk.GetArrayFromImage(moving).astype(np.float32, copy=False))
    out = F.grid_sample(image[None, None], grid[None], mode="bilinear",
                        padding_mode="border", align_corners=True)[0, 0]
    out[~inside] = default
    result = sitk.GetImageFromArray(out.numpy())
    result.CopyInformation(fixed_grid)
    return result


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
