"""Landmark files -> physical points ``(N, 3)`` in mm.

* elastix ``.pts``: first line ``point`` or ``index``, second the count, then one point a line;
  ``index`` points are 0-based voxel indices of the given image.
* ``.csv``: one point a line, x, y, z in mm (a header line is allowed).
* DIR-Lab ``.txt``: 1-based voxel indices x y z, converted with the given spacing (and the
  image's origin/direction when an image is given).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from regnet.errors import fail


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
    if path.suffix.lower() == ".pts" or (lines and lines[0].strip().lower() in ("point",
                                                                              "index")):
        kind = lines[0].strip().lower()
        points = _numbers(lines[2:], path)
        if kind == "index":
            if image is None:
                raise fail(path, "index landmarks need the image they index (--dvf grid)")
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
        return index_to_physical(indices, image)
    return indices * np.asarray(spacing_xyz, dtype=np.float64)
