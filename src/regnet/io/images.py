"""Image I/O and resampling through SimpleITK, with one-line errors that name the file.

Reads mha/mhd, nii/nii.gz, nrrd, a folder holding a DICOM series, and 2D png/jpg (spacing
1 mm). Origin, spacing and direction are kept. Arrays follow ``(z, y, x)``
(docs/conventions.md).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from regnet.errors import fail
from regnet.io.atomic import atomic_path

log = logging.getLogger(__name__)
_2D_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@contextlib.contextmanager
def native_stderr_to(lines: list):
    """Catch what ITK's C++ code prints on file descriptor 2 (MetaIO and NIfTI chatter) while
    reading, so that the user sees one line; the text is appended to ``lines``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                lines.append(text)
                log.debug("ITK said: %s", text)


def itk_read_reason(exc: Exception, native: str = "") -> str:
    """The informative part of a SimpleITK read error (and of what ITK printed)."""
    text = str(exc)
    if "data not read completely" in native:
        return "truncated: the image data ends early"
    if "Unable to determine ImageIO reader" in text:
        return "not an image format SimpleITK can read"
    if "Refusing to change spacing" in text:
        return "spacing in the header is zero or negative"
    if "File cannot be read" in text:
        return "image data cannot be read (truncated or damaged file)"
    lines = [line.strip().removeprefix("[nrrd]").strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception thrown")]
    return f"cannot be read as an image ({(lines[-1] if lines else 'unknown error')[:120]})"


def _nifti_header(header: bytes) -> tuple[int, np.ndarray] | None:
    """``(bytes the file should hold, spacing)`` of a single-file NIfTI-1/2 (``n+1``/``n+2``)
    header, else None."""
    for order in "<>":
        if len(header) >= 348 and np.frombuffer(header[:4], order + "i4")[0] == 348:
            if header[344:347] != b"n+1":
                return None
            dims = np.frombuffer(header[40:56], order + "i2").astype(np.int64)
            bitpix = int(np.frombuffer(header[72:74], order + "i2")[0])
            pixdim = np.frombuffer(header[76:108], order + "f4").astype(np.float64)
            offset = float(np.frombuffer(header[108:112], order + "f4")[0])
            break
        if len(header) >= 540 and np.frombuffer(header[:4], order + "i4")[0] == 540:
            if header[4:7] != b"n+2":
                return None
            bitpix = int(np.frombuffer(header[14:16], order + "i2")[0])
            dims = np.frombuffer(header[16:80], order + "i8")
            pixdim = np.frombuffer(header[104:168], order + "f8")
            offset = float(np.frombuffer(header[168:176], order + "i8")[0])
            break
    else:
        return None
    n = int(dims[0])
    if not 1 <= n <= 7 or (dims[1:n + 1] < 1).any() or bitpix < 1 or not np.isfinite(offset):
        return None
    size = int(offset) + int(np.prod(dims[1:n + 1], dtype=np.float64)) * bitpix // 8
    return size, pixdim[1:min(n, 3) + 1]


def check_complete(path: Path) -> None:
    """Raise when a file is empty, a gzip stream is cut or damaged, or a NIfTI file holds fewer
    bytes than its header promises or a spacing <= 0. SimpleITK reads cut files silently as
    zeros and replaces such spacings."""
    size = path.stat().st_size
    if size == 0:
        raise fail(path, "file is empty (0 bytes)")
    name = path.name.lower()
    if not name.endswith((".nii", ".gz")):
        return
    header, total = b"", 0
    if name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(1 << 24):
                    if len(header) < 540:
                        header += chunk[:540]
                    total += len(chunk)
        except EOFError as exc:
            raise fail(path, "truncated: the gzip stream ends early (copy the file "
                       "again)") from exc
        except (OSError, zlib.error) as exc:
            raise fail(path, f"cannot be read: damaged or not gzip data ({_first_line(exc)})"
                       ) from exc
    else:
        with open(path, "rb") as stream:
            header = stream.read(540)
        total = size
    nifti = _nifti_header(header) if ".nii" in name else None
    if nifti is None:
        return
    expected, spacing = nifti
    if total < expected:
        raise fail(path, f"truncated: holds {total} bytes, its NIfTI header needs {expected}")
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise fail(path, f"spacing {tuple(spacing.tolist())} in the NIfTI header (pixdim) is "
                   "not positive")


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:120] if lines else exc.__class__.__name__


def _read_dicom_folder(path: Path, series=None) -> sitk.Image:
    """Read the folder's DICOM series; ``series``: UIDs to choose from when it holds several."""
    reader = sitk.ImageSeriesReader()
    ids = list(reader.GetGDCMSeriesIDs(str(path)))
    if not ids:
        raise fail(path, "folder holds no DICOM series")
    chosen = [uid for uid in ids if series and uid in series]
    if not chosen and len(ids) > 1:
        if series:
            raise fail(path, f"holds none of the DICOM series {list(series)}; it holds "
                       f"{', '.join(ids)}")
        raise fail(path, f"folder holds {len(ids)} DICOM series ({', '.join(ids)}); choose one "
                   "with --series UID")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), (chosen or ids)[0]))
    return reader.Execute()


def check_geometry(image: sitk.Image, path) -> None:
    """Raise unless spacing is positive, origin finite and the direction orthonormal."""
    n = image.GetDimension()
    spacing = np.asarray(image.GetSpacing())
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise fail(path, f"spacing {tuple(spacing)} is not positive")
    if not np.isfinite(image.GetOrigin()).all():
        raise fail(path, f"origin {image.GetOrigin()} is not finite")
    direction = np.asarray(image.GetDirection()).reshape(n, n)
    if not np.allclose(direction.T @ direction, np.eye(n), atol=1e-3):
        raise fail(path, f"direction {np.round(direction.ravel(), 4).tolist()} is not "
                   "orthonormal (a rotation or reflection is needed)")


def read_itk(path: str | Path, series=None) -> sitk.Image:
    """Read a file (or a DICOM folder) as SimpleITK does, after :func:`check_complete` and with
    ITK's own messages caught: any failure is one :class:`RegNetError` line naming the file."""
    path = Path(path)
    if not path.exists():
        raise fail(path, "file not found")
    native: list[str] = []
    try:
        if path.is_dir():
            with native_stderr_to(native):
                return _read_dicom_folder(path, series)
        check_complete(path)
        with native_stderr_to(native):
            return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise fail(path, itk_read_reason(exc, "\n".join(native))) from exc
    except OSError as exc:
        raise fail(path, f"cannot be read ({exc.strerror or exc.__class__.__name__})") from exc


def read_image(path: str | Path, dim: int | None = None, series=None) -> sitk.Image:
    """Read a scalar image as float32, checking that it is complete, has a sound geometry, is
    finite and has ``dim`` axes.

    A folder is read as a DICOM series (``series``: UIDs to pick from when it holds several).
    Colour 2D images are converted to grey.
    """
    path = Path(path)
    image = read_itk(path, series)
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
    if image.GetDimension() not in (2, 3):
        raise fail(path, f"is {image.GetDimension()}D (size {image.GetSize()}); RegNet reads "
                   "2D or 3D images (split a time series into volumes first)")
    if dim is not None and image.GetDimension() != dim:
        raise fail(path, f"is {image.GetDimension()}D; a {dim}D image is expected")
    if path.suffix.lower() in _2D_SUFFIXES:
        image.SetSpacing((1.0,) * image.GetDimension())
    check_geometry(image, path)
    try:
        image = sitk.Cast(image, sitk.sitkFloat32)
    except RuntimeError as exc:  # complex and other pixel types that have no scalar value
        raise fail(path, f"pixel type '{image.GetPixelIDTypeAsString()}' cannot be read as "
                   "scalar intensities") from exc
    if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
        raise fail(path, "contains NaN or infinite voxels")
    return image


def check_not_constant(image: sitk.Image, path) -> None:
    """Raise when every voxel has the same value: there is nothing to register or learn."""
    values = sitk.GetArrayViewFromImage(image)
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-6 * max(1.0, abs(high)):
        raise fail(path, f"image is constant (every voxel = {low:g}): nothing to register")


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical box ``(low_xyz, high_xyz)`` in mm around the image's voxels."""
    size = np.asarray(image.GetSize())
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in size])).reshape(len(size), -1).T
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, c)))
                       for c in corners])
    return points.min(0), points.max(0)


def overlap_fraction(fixed: sitk.Image, moving: sitk.Image) -> float:
    """Share of the fixed image's physical box that the moving image's box covers."""
    (f_lo, f_hi), (m_lo, m_hi) = physical_bounds(fixed), physical_bounds(moving)
    inter = np.clip(np.minimum(f_hi, m_hi) - np.maximum(f_lo, m_lo), 0, None)
    return float(np.prod(inter) / max(np.prod(f_hi - f_lo), 1e-12))


def write_image(image: sitk.Image, path: str | Path, compress: bool | None = None) -> Path:
    """Write atomically; ``.nii.gz`` is compressed, ``.mha`` is not unless asked."""
    path = Path(path)
    if compress is None:
        compress = path.name.endswith(".gz")
    try:
        with atomic_path(path) as tmp:
            sitk.WriteImage(image, str(tmp), compress)
    except (RuntimeError, OSError) as exc:
        text = str(exc) if isinstance(exc, RuntimeError) else (exc.strerror or "")
        reason = ("no space left on device" if "No space left" in text or "no space" in text
                  else _first_line(exc))
        raise fail(path, f"cannot be written: {reason} (nothing was written)") from exc
    return path


def grid_of(image: sitk.Image) -> sitk.Image:
    """A uint8 image carrying ``image``'s geometry (size, origin, spacing, direction) only."""
    grid = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    grid.CopyInformation(image)
    return grid


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


def load_mask(path, reference: sitk.Image) -> np.ndarray:
    """Read a binary mask (0 and one other value), resample it (nearest) onto ``reference``
    when its grid differs, and return a bool array of ``reference``'s shape."""
    mask_image = read_image(path, dim=reference.GetDimension())
    if not same_grid(mask_image, reference):
        mask_image = resample_to_grid(mask_image, reference, 0.0, sitk.sitkNearestNeighbor)
    values = sitk.GetArrayFromImage(mask_image)
    distinct = np.unique(values)
    if len(distinct) > 2 or (len(distinct) == 2 and distinct[0] != 0):
        shown = ", ".join(f"{v:g}" for v in distinct[:5])
        raise fail(path, f"mask is not binary: holds {len(distinct)} values ({shown}"
                   f"{', ...' if len(distinct) > 5 else ''}); pass a 0/1 mask")
    mask = values > 0
    if not mask.any():
        raise fail(path, "mask is empty on the image grid (no voxel > 0, or it lies outside "
                   "the image)")
    return mask
