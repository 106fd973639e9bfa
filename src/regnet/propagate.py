"""``regnet apply``: carry a registration to images, label maps and points, in both directions.

``regnet register`` writes a DVF ``u`` on the fixed grid that maps fixed points into the
moving image (docs/conventions.md). With it:

* an image in moving space comes onto the fixed grid: ``out(x) = image(x + u(x))``;
* fixed-space points go into moving space: ``p -> p + u(p)``;
* with the inverse ``v`` (on the moving grid, :mod:`regnet.geometry.invert`) an image in
  fixed space comes onto the moving grid, ``out(y) = image(y + v(y))``, and moving-space
  points come into fixed space, ``q -> q + v(q)``.

The image may lie on any grid (a dose grid, say): it is read in physical space.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from regnet.errors import UsageError, fail
from regnet.geometry.faces import maps_inside
from regnet.geometry.invert import invert_and_check
from regnet.geometry.warp import INTERPOLATORS, map_points, points_inside, warp_image
from regnet.io.dvf import read_dvf, write_dvf
from regnet.io.images import grid_of, read_itk, write_image
from regnet.io.landmarks import read_landmarks, write_landmarks

log = logging.getLogger(__name__)

KEEP_PIXEL_TYPE = ("nearest", "label")  # interpolations whose output keeps the input's type


@dataclass(frozen=True)
class ApplyOptions:
    """How ``regnet apply`` carries things through a field.

    interpolation: ``linear``, ``nearest``, ``bspline`` (cubic) or ``label`` (per-label
    linear, most likely label kept: for label maps; keeps the pixel type).
    default: value where the image has nothing; None: 0 for label maps and nearest, else the
    image's minimum. inverse: use the field's inverse (fixed space -> moving space).
    moving_grid: the moving image (a file), whose grid the inverse lives on; None: the field's
    own grid."""

    interpolation: str = "linear"
    default: float | None = None
    inverse: bool = False
    moving_grid: str | Path | None = None


@dataclass
class ApplyResult:
    """What :func:`apply` made: ``image`` (image mode), ``points_mm`` ``(N, dim)`` and the
    0-based rows of ``outside`` points (point mode), ``field_mm`` on ``grid`` (the field used,
    the inverse with ``inverse`` or ``invert``), and ``consistency`` of the inverse
    (:func:`regnet.geometry.invert.inverse_consistency`) when one was made."""

    field_mm: np.ndarray
    grid: sitk.Image
    image: sitk.Image | None = None
    points_mm: np.ndarray | None = None
    outside: list[int] = dataclasses.field(default_factory=list)
    consistency: dict | None = None


def apply(dvf, image=None, points=None, out=None, invert: bool = False,
          options: ApplyOptions | None = None, **option_values) -> ApplyResult:
    """Carry ``image`` or ``points`` (files) through the field in ``dvf`` (a file), or with
    ``invert`` make its inverse; write the result to ``out`` when given. Options come as an
    :class:`ApplyOptions` or as its fields by name (``interpolation="label"``)."""
    options = dataclasses.replace(options or ApplyOptions(), **option_values)
    if options.interpolation not in INTERPOLATORS:
        raise UsageError(f"--interpolation {options.interpolation!r}: choose one of "
                         f"{tuple(INTERPOLATORS)}")
    if sum(x is not None and x is not False for x in (image, points, invert)) != 1:
        raise UsageError("regnet apply: give one of --image, --points or --invert")
    dvf_mm, grid = read_dvf(dvf)
    result = ApplyResult(dvf_mm, grid)
    if invert or options.inverse:
        target = grid_of(read_itk(options.moving_grid)) if options.moving_grid else grid
        if target.GetDimension() != grid.GetDimension():
            raise fail(options.moving_grid, f"is {target.GetDimension()}D but the field {dvf} "
                       f"is {grid.GetDimension()}D")
        result.field_mm, result.consistency = invert_and_check(dvf_mm, grid, target)
        result.grid = target
    if invert:
        if out is not None:
            write_dvf(result.field_mm, result.grid, out)
    elif image is not None:
        result.image = warp_file(image, result.field_mm, result.grid, options, dvf)
        if out is not None:
            write_image(result.image, out)
    else:
        destination = grid if options.inverse else (
            grid_of(read_itk(options.moving_grid)) if options.moving_grid else None)
        result.points_mm, result.outside = map_point_file(points, result.field_mm, result.grid)
        if out is not None:
            write_landmarks(out, result.points_mm, destination)
    return result


def warp_file(path, field_mm: np.ndarray, grid: sitk.Image, options: ApplyOptions,
              dvf) -> sitk.Image:
    """The image at ``path`` (any grid, scalar or vector) resampled onto ``grid`` through
    ``field_mm`` with ``options``' interpolation and default."""
    image = read_itk(path)
    if image.GetDimension() != grid.GetDimension():
        raise fail(path, f"is {image.GetDimension()}D but the field {dvf} is "
                   f"{grid.GetDimension()}D")
    label = options.interpolation == "label"
    components = image.GetNumberOfComponentsPerPixel()
    if label and components > 1:
        raise fail(path, f"has {components} components per voxel; a label map has one")
    values = sitk.GetArrayViewFromImage(image)
    if label and not np.array_equal(values, np.round(values)):
        raise fail(path, "is not a label map: it holds non-integer values (e.g. "
                   f"{values[values != np.round(values)].flat[0]:g}); use --interpolation "
                   "linear for intensities")
    default = options.default
    if default is None:
        default = 0.0 if options.interpolation in KEEP_PIXEL_TYPE else float(values.min())
    if not maps_inside(field_mm, grid, image).any():
        log.warning("%s does not overlap the field's physical extent: every voxel is the "
                    "default value %g", path, default)
    if options.interpolation in KEEP_PIXEL_TYPE:
        pixel_type = image.GetPixelID()
    else:
        pixel_type = sitk.sitkVectorFloat32 if components > 1 else sitk.sitkFloat32
    return warp_image(image, field_mm, grid, default, INTERPOLATORS[options.interpolation],
                      pixel_type)


def map_point_file(path, field_mm: np.ndarray, grid: sitk.Image) -> tuple[np.ndarray, list]:
    """Read the landmark file at ``path`` (voxel formats index ``grid``) and map its points:
    ``(points (N, dim) mm, 0-based rows beyond the field)``; those rows are warned about and
    keep their position."""
    points = read_landmarks(path, grid)
    outside = np.flatnonzero(~points_inside(points, grid)).tolist()
    if outside:
        shown = ", ".join(str(k + 1) for k in outside[:20])
        log.warning("%s: %d of %d points lie beyond the field and keep their position "
                    "(rows %s%s)", path, len(outside), len(points), shown,
                    ", ..." if len(outside) > 20 else "")
    return map_points(points, field_mm, grid), outside


def apply_command(args) -> int:
    """``regnet apply`` from parsed arguments; prints one line of what it wrote."""
    options = ApplyOptions(args.interpolation, args.default, args.inverse, args.moving_grid)
    if args.invert and args.inverse:
        raise UsageError("--invert writes the inverse field; --inverse applies it: give one")
    result = apply(args.dvf, image=args.image, points=args.points, out=args.out,
                   invert=args.invert, options=options)
    what = ("inverse field" if args.invert else "image" if args.image else
            f"{len(result.points_mm)} points ({len(result.outside)} beyond the field)")
    line = f"apply: {what} written to {args.out}"
    if result.consistency is not None:
        c = result.consistency
        line += (f"; inverse-consistency mean {c['mean_mm']} mm, max {c['max_mm']} mm over "
                 f"{c['voxels']} voxels")
    print(line)
    return 0

