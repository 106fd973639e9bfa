"""``report.png`` and ``report.html`` for one registration."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from regnet.errors import fail
from regnet.geometry.jacobian import jacobian_determinant, jacobian_summary
from regnet.geometry.warp import warp_image
from regnet.io.atomic import write_text_atomic
from regnet.io.dvf import read_dvf
from regnet.io.images import read_image, resample_to_grid, same_grid
from regnet.reporting.figures import checkerboard, montage, orthogonal_slices


def largest_motion_voxel(dvf_mm: np.ndarray) -> tuple[int, ...]:
    """Array index of the largest |u| after smoothing over ~4 voxels: where slices show most.
    Found on every second voxel per axis (an eighth of the work in 3D)."""
    step = 2 if dvf_mm.ndim == 4 else 1
    coarse = dvf_mm[(slice(None, None, step),) * (dvf_mm.ndim - 1)]
    magnitude = gaussian_filter(np.linalg.norm(coarse, axis=-1), 4.0 / step)
    index = np.unravel_index(int(np.argmax(magnitude)), magnitude.shape)
    return tuple(step * int(i) for i in index)


def write_report(out: str | Path, fixed: sitk.Image, moving: sitk.Image,
                 moved: sitk.Image, dvf_mm: np.ndarray, jacobian: np.ndarray,
                 summary: dict, extra_rows=()) -> tuple[Path, Path]:
    """Rows: fixed, moving, moved, |fixed - moving|, |fixed - moved|, |u|, Jacobian,
    checkerboard(fixed, moved), then ``extra_rows`` ``(title, volume (D, H, W), cmap,
    (vmin, vmax) or None)``; one column per orthogonal slice, through the voxel of largest
    motion (in 2D the panels on rows of 4). Everything shown is computed on those slices
    only; display ranges come from every second voxel per axis."""
    out = Path(out)
    spacing = fixed.GetSpacing()
    if not same_grid(moving, fixed):  # show the moving image on the fixed grid
        moving = resample_to_grid(moving, fixed)
    f, m, w = (sitk.GetArrayViewFromImage(x) for x in (fixed, moving, moved))
    centre = largest_motion_voxel(dvf_mm) if f.ndim == 3 else None

    def cut(volume):
        return orthogonal_slices(volume, spacing, centre)

    sample = (slice(None, None, 2),) * f.ndim
    fs, ms, ws = (a[sample].astype(np.float32) for a in (f, m, w))
    lo, hi = np.percentile(fs, [1, 99])
    diff_max = max(float(np.percentile(np.abs(fs - ms), 99)),
                   float(np.percentile(np.abs(fs - ws), 99)), 1e-6)  # one scale, before and after

    def sliced(volume):
        return [(name, np.asarray(image, np.float32), aspect)
                for name, image, aspect in cut(volume)]

    def combine(op, *slice_lists):  # op applied slice by slice
        return [(parts[0][0], op(*(p[1] for p in parts)), parts[0][2])
                for parts in zip(*slice_lists, strict=True)]

    def difference(a, b):
        return np.abs(a - b)

    f_cut, m_cut, w_cut = (sliced(a) for a in (f, m, w))
    rows = [("fixed", f_cut, "gray", (lo, hi)), ("moving", m_cut, "gray", (lo, hi)),
            ("moved", w_cut, "gray", (lo, hi)),
            ("|fixed - moving|", combine(difference, f_cut, m_cut), "magma", (0, diff_max)),
            ("|fixed - moved|", combine(difference, f_cut, w_cut), "magma", (0, diff_max)),
            ("|u| (mm)", combine(lambda u: np.linalg.norm(u, axis=-1), sliced(dvf_mm)), "jet",
             None),
            ("Jacobian det", sliced(jacobian), "RdBu_r", (0.0, 2.0)),
            ("checkerboard fixed/moved", combine(checkerboard, f_cut, w_cut), "gray", (lo, hi)),
            *[(title, sliced(volume), cmap, limits) for title, volume, cmap, limits
              in extra_rows]]

    panels = [(f"{title} - {name}", image, aspect, cmap,
               limits or (0.0, float(image.max()) or 1.0))
              for title, slices, cmap, limits in rows for name, image, aspect in slices]
    png = montage(panels, 3 if f.ndim == 3 else 4, out / "report.png")
    encoded = base64.b64encode(png.read_bytes()).decode()
    table = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td>"
                    "</tr>" for k, v in summary.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>RegNet registration"
            f"</title></head><body><h1>RegNet registration</h1><table>{table}</table>"
            f"<p>The DVF maps fixed points into the moving image: moved(x) = moving(x + u(x))."
            f"</p><img alt='report' src='data:image/png;base64,{encoded}'></body></html>")
    page_path = out / "report.html"
    write_text_atomic(page_path, page)
    return png, page_path


def report_files(fixed_path, moving_path, dvf_path, out) -> tuple[Path, Path]:
    """The report of any registration result (RegNet's, elastix's, ANTs') from its files."""
    fixed, moving = read_image(fixed_path), read_image(moving_path)
    dvf_mm, grid = read_dvf(dvf_path)
    if not same_grid(grid, fixed):
        raise fail(dvf_path, f"DVF grid {grid.GetSize()} does not match the fixed image grid "
                   f"{fixed.GetSize()}")
    moved = warp_image(moving, dvf_mm, fixed,
                       default=float(sitk.GetArrayViewFromImage(moving).min()))
    det = jacobian_determinant(dvf_mm, fixed.GetSpacing())
    summary = {"fixed": str(fixed_path), "moving": str(moving_path), "dvf": str(dvf_path),
               **jacobian_summary(det)}
    return write_report(out, fixed, moving, moved, dvf_mm, det, summary)
