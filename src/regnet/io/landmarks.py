"""Landmark files <-> physical points ``(N, 3)`` in mm (2D: ``(N, 2)``).

* elastix ``.pts``: first line ``point`` or ``index``, second the count, then one point a line;
  ``index`` points are 0-based voxel indices of the given image.
* ``.csv``: one point a line, x, y, z in mm (a header line is allowed).
* DIR-Lab ``.txt``: 1-based voxel indices x y z, converted with the given spacing (and the
  image's origin/direction when an image is given).
* legacy ASCII VTK ``.vtk``: the ``POINTS n type`` block, x y z in mm.

:func:`write_landmarks` writes the same formats, chosen by the file's suffix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from regnet.errors import fail
from regnet.io.atomic import write_text_atomic

LANDMARK_SUFFIXES = (".pts", ".csv", ".txt", ".vtk")


def _numbers(lines, path) -> np.ndarray:
    try:
        rows = [[float(v) for v in line.replace(",", " ").split()] for line in lines
                if line.strip()]
    except ValueError as exc:
        raise fail(path, f"holds a line that is not numbers ({exc})") from exc
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise fail(path, "needs the same number of coordinates on every line")
    return np.array(rows, dtype=np.float64)


def index_to_physical(indices_xyz: np.ndarray, image: sitk.Image) -> np.ndarray:
    return np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, p)))
                     for p in indices_xyz])


def read_landmarks(path: str | Path, image: sitk.Image | None = None,
                   spacing_xyz=None) -> np.ndarray:
    """Read a landmark file (format from its suffix and first line) as physical mm points."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "landmark file not found")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    points = _parse(path, lines, image, spacing_xyz)
    dim = image.GetDimension() if image is not None else (
        len(spacing_xyz) if spacing_xyz is not None else points.shape[1])
    if points.shape[1] != dim:
        raise fail(path, f"landmarks have {points.shape[1]} coordinates each; the image is "
                   f"{dim}D")
    if not np.isfinite(points).all():
        raise fail(path, "holds non-finite coordinates")
    return points


def _parse(path: Path, lines: list[str], image, spacing_xyz) -> np.ndarray:
    first = lines[0].strip().lower() if lines else ""
    if path.suffix.lower() == ".vtk":
        return _vtk_points(path, lines)
    if path.suffix.lower() == ".pts" or first in ("point", "index"):
        if first not in ("point", "index") or len(lines) < 2:
            raise fail(path, "an elastix .pts file starts with 'point' or 'index', then the "
                       "number of points")
        try:
            count = int(lines[1].strip())
        except ValueError as exc:
            raise fail(path, f"second line {lines[1].strip()[:40]!r} is not the number of "
                       "points") from exc
        points = _numbers(lines[2:], path)
        if len(points) != count:
            raise fail(path, f"header says {count} points but the file holds {len(points)}")
        if first == "index":
            if image is None:
                raise fail(path, "index landmarks need the image they index (--dvf grid)")
            _check_indices(points, image, path)
            return index_to_physical(points, image)
        return points
    if path.suffix.lower() == ".csv":
        body = lines[1:] if lines and any(c.isalpha() for c in lines[0]) else lines
        return _numbers(body, path)
    # DIR-Lab: 1-based voxel indices
    if spacing_xyz is None and image is None:
        raise fail(path, "DIR-Lab voxel landmarks need --landmark-spacing (x y z mm)")
    indices = _numbers(lines, path) - 1.0
    if image is not None and spacing_xyz is None:
        _check_indices(indices, image, path)
        return index_to_physical(indices, image)
    if spacing_xyz is not None and indices.shape[1] != len(spacing_xyz):
        raise fail(path, f"landmarks have {indices.shape[1]} coordinates, the spacing "
                   f"{len(spacing_xyz)}")
    return indices * np.asarray(spacing_xyz, dtype=np.float64)


def _vtk_points(path: Path, lines: list[str]) -> np.ndarray:
    """The ``POINTS n type`` block of a legacy ASCII VTK file: ``(n, 3)`` mm."""
    for k, line in enumerate(lines):
        words = line.split()
        if words and words[0].upper() == "POINTS":
            try:
                count = int(words[1])
            except (IndexError, ValueError) as exc:
                raise fail(path, f"bad POINTS line {line.strip()[:40]!r}") from exc
            values = np.zeros(0)
            for rest in lines[k + 1:]:
                if len(values) >= 3 * count or not rest.strip():
                    break
                values = np.concatenate([values, _numbers([rest], path).ravel()])
            if count < 1 or len(values) < 3 * count:
                raise fail(path, f"POINTS says {count} points but the file holds "
                           f"{len(values) // 3}")
            return values[: 3 * count].reshape(count, 3)
    raise fail(path, "no POINTS block in this VTK file")


def _check_indices(indices: np.ndarray, image: sitk.Image, path) -> None:
    if indices.shape[1] != image.GetDimension() or not np.isfinite(indices).all():
        raise fail(path, f"landmarks have {indices.shape[1]} coordinates each; the image is "
                   f"{image.GetDimension()}D")


def write_landmarks(path: str | Path, points_mm: np.ndarray, image: sitk.Image | None = None
                    ) -> Path:
    """Write physical points ``(N, dim)`` atomically in the format of ``path``'s suffix:
    ``.pts`` (elastix ``point``), ``.csv`` (mm, with a header), ``.vtk`` (legacy ASCII) or
    ``.txt`` (DIR-Lab 1-based voxel indices of ``image``, which it then needs)."""
    path = Path(path)
    points = np.asarray(points_mm, dtype=np.float64)
    suffix = path.suffix.lower()
    if suffix not in LANDMARK_SUFFIXES:
        raise fail(path, f"unknown landmark format {suffix!r}; use one of {LANDMARK_SUFFIXES}")

    def rows(values, sep=" "):
        return "".join(sep.join(f"{v:.4f}" for v in row) + "\n" for row in values)

    if suffix == ".pts":
        text = f"point\n{len(points)}\n" + rows(points)
    elif suffix == ".csv":
        text = ",".join(f"{a}_mm" for a in "xyz"[:points.shape[1]]) + "\n" + rows(points, ",")
    elif suffix == ".vtk":
        padded = np.pad(points, ((0, 0), (0, 3 - points.shape[1])))
        text = (f"# vtk DataFile Version 3.0\nregnet landmarks\nASCII\nDATASET POLYDATA\n"
                f"POINTS {len(points)} double\n" + rows(padded))
    else:
        if image is None:
            raise fail(path, "DIR-Lab voxel landmarks need the image they index (--reference)")
        text = rows([np.asarray(image.TransformPhysicalPointToContinuousIndex(
            tuple(map(float, p)))) + 1.0 for p in points])
    write_text_atomic(path, text)
    return path
