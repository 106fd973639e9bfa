"""Image I/O and resampling through SimpleITK, with one-line errors that name the file.

Reads mha/mhd, nii/nii.gz, nrrd, a folder holding a DICOM series, and 2D png/jpg (spacing
1 mm). Origin, spacing and direction are kept. Arrays follow ``(z, y, x)`` (see
:mod:`regnet.conventions`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from regnet.errors import RegNetError, fail
from regnet.io.atomic import atomic_path

_2D_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def read_image(path: str | Path, dim: int | None = None) -> sitk.Image:
    """Read a scalar image as float32, checking that it exists, is finite and has ``dim`` axes.

    A folder is read as a DICOM series. Colour 2D images are converted to grey.
    """
    path = Path(path)
    if not path.exists():
        raise fail(path, "file not found")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            names = reader.GetGDCMSeriesFileNames(str(path))
            if not names:
                raise fail(path, "folder holds no DICOM series")
            reader.SetFileNames(names)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise fail(path, f"cannot be read as an image ({first[:120]})") from exc
    if image.GetNumberOfComponentsPerPixel() > 1:
        if path.suffix.lower() in _2D_SUFFIXES:
            channels = [sitk.VectorIndexSelectionCast(image, i, sitk.sitkFloat32)
                        for i in range(min(3, image.GetNumberOfComponentsPerPixel()))]
            image = sum(channels[1:], channels[0]) / float(len(channels))
        else:
            raise fail(path, f"has {image.GetNumberOfComponentsPerPixel()} components per "
                       "voxel; a scalar image is expected")
    if image.GetDimension() == 3 and image.GetSize()[2] == 1 and dim == 2:
        image = image[:, :, 0]
    if dim is not None and image.GetDimension() != dim:
        raise fail(path, f"is {image.GetDimension()}D; a {dim}D image is expected")
    if image.GetDimension() not in (2, 3):
        raise fail(path, f"is {image.GetDimension()}D; RegNet reads 2D or 3D images")
    if path.suffix.lower() in _2D_SUFFIXES:
        image.SetSpacing((1.0,) * image.GetDimension())
    image = sitk.Cast(image, sitk.sitkFloat32)
    if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
        raise fail(path, "contains NaN or infinite voxels")
    return image


def write_image(image: sitk.Image, path: str | Path, compress: bool | None = None) -> Path:
    """Write atomically; ``.nii.gz`` is compressed, ``.mha`` is not unless asked."""
    path = Path(path)
    if compress is None:
        compress = path.name.endswith(".gz")
    try:
        with atomic_path(path) as tmp:
            sitk.WriteImage(image, str(tmp), compress)
    except (RuntimeError, OSError) as exc:
        raise fail(path, f"cannot be written ({exc.__class__.__name__})") from exc
    return path


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """True when both images have the same size, origin, spacing and direction."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def resample_to_grid(image: sitk.Image, reference: sitk.Image, default: float = 0.0,
                     interpolator=sitk.sitkLinear) -> sitk.Image:
    """Resample ``image`` (physical space) onto ``reference``'s grid."""
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default,
                         sitk.sitkFloat32)


def isotropic_grid(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """An empty image covering ``image``'s extent with isotropic ``spacing_mm`` voxels.

    Same origin and direction; the size is the old extent divided by the new spacing, rounded.
    """
    old_size = np.array(image.GetSize())
    old_spacing = np.array(image.GetSpacing())
    size = np.maximum(1, np.round(old_size * old_spacing / spacing_mm)).astype(int)
    grid = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    grid.SetOrigin(image.GetOrigin())
    grid.SetSpacing([float(spacing_mm)] * image.GetDimension())
    grid.SetDirection(image.GetDirection())
    return grid


def resample_isotropic(image: sitk.Image, spacing_mm: float, default: float | None = None
                       ) -> sitk.Image:
    """Resample to isotropic ``spacing_mm`` (linear); no-op when already on that spacing.

    ``default`` fills points outside the image; by default the image's minimum.
    """
    if np.allclose(image.GetSpacing(), spacing_mm):
        return image
    if default is None:
        default = float(sitk.GetArrayViewFromImage(image).min())
    return resample_to_grid(image, isotropic_grid(image, spacing_mm), default)


def check_min_size(image: sitk.Image, minimum: int, path, what: str) -> None:
    """Raise when any axis is shorter than ``minimum`` voxels."""
    if min(image.GetSize()) < minimum:
        raise fail(path, f"size {image.GetSize()} is smaller than {minimum} voxels ({what})")


def load_mask(path, reference: sitk.Image) -> np.ndarray:
    """Read a mask, resample it (nearest) onto ``reference`` and return a bool array."""
    mask_image = read_image(path, dim=reference.GetDimension())
    if not same_grid(mask_image, reference):
        mask_image = resample_to_grid(mask_image, reference, 0.0, sitk.sitkNearestNeighbor)
    mask = sitk.GetArrayFromImage(mask_image) > 0.5
    if not mask.any():
        raise RegNetError(f"{path}: mask is empty (no voxel > 0 on the image grid)")
    return mask
