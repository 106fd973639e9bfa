"""Residual pairs: what earlier stages leave, for training a later stage (beyond the seed).

For a generated pair (fixed ``F``, moving ``M``, true field ``u``), the earlier stages (a
trained model, run as ``regnet register`` runs it) give ``u_prev``. At registration the later
stage sees ``F`` and ``M' = M(x + u_prev(x))`` and must predict the residual ``r`` with

    ``u(x) = r(x) + u_prev(x + r(x))``     (:func:`regnet.geometry.compose.compose_dvfs`),

found by the fixed-point iteration ``r <- u - u_prev(x + r)`` (it converges where ``u_prev``
does not fold). ``regnet residuals`` writes, for every pair of ``--data``, ``moving.mha``
(``M'``) and ``dvf.mha`` (``r``) under ``--out``, with a manifest like ``regnet generate``'s
whose ``fixed`` entries point at the original fixed images. Finished pairs (their
``row.json``) are skipped on a rerun.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from regnet.devices import pick_device
from regnet.geometry.compose import sample_field, voxel_indices
from regnet.geometry.warp import warp_image
from regnet.inference.models import load_model
from regnet.inference.options import RegisterOptions
from regnet.inference.stages import run_stages
from regnet.io.atomic import write_text_atomic
from regnet.io.dvf import itk_to_dvf, resample_dvf, write_dvf
from regnet.io.images import write_image
from regnet.synthesis.generate import write_manifest

log = logging.getLogger(__name__)


def residual_field(u_mm: np.ndarray, u_prev_mm: np.ndarray, spacing_mm_xyz,
                   iterations: int = 20) -> np.ndarray:
    """``r`` with ``u(x) = r(x) + u_prev(x + r(x))`` (grid frame mm, one grid)."""
    spacing = np.asarray(spacing_mm_xyz, dtype=np.float64)
    index = voxel_indices(u_mm.shape[:-1])
    r = u_mm - u_prev_mm
    for _ in range(iterations):
        r = u_mm - sample_field(u_prev_mm, index + r / spacing)
    return r.astype(np.float32)


def make_residuals(data, model, out, device="cpu", dsmooth=None) -> int:
    """Residual pairs of every pair in ``data``'s manifest (or of those whose Dsmooth variant
    is in ``dsmooth``) after ``model``'s stages; returns the number of pairs in
    ``out/manifest.csv``."""
    data, out = Path(data), Path(out)
    loaded = model if not isinstance(model, str | Path) else load_model(model)
    device = pick_device(device) if isinstance(device, str) else device
    for stage_model in loaded.stages or [loaded]:
        stage_model.network.to(device)
    keep = None if dsmooth is None else set(dsmooth)
    with open(data / "manifest.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if keep is None or int(row["dsmooth"]) in keep]
    done = []
    for row in tqdm(rows, desc="residuals", unit="pair"):
        folder = out / Path(row["dvf"]).parent
        if not (folder / "row.json").exists():
            fixed = sitk.ReadImage(str(data / row["fixed"]))
            moving = sitk.ReadImage(str(data / row["moving"]))
            truth = itk_to_dvf(sitk.ReadImage(str(data / row["dvf"])), row["dvf"])
            background = float(sitk.GetArrayViewFromImage(moving).min())
            u_prev, grid, _ = run_stages(fixed, moving, loaded, device,
                                         RegisterOptions().checked(fixed.GetDimension()),
                                         background)
            u_prev = resample_dvf(u_prev, grid, fixed)
            r = residual_field(truth, u_prev, fixed.GetSpacing())
            write_image(warp_image(moving, u_prev, fixed, default=background),
                        folder / "moving.mha")
            write_dvf(r, fixed, folder / "dvf.mha")
            new = {**row, "moving": str(folder.relative_to(out) / "moving.mha"),
                   "dvf": str(folder.relative_to(out) / "dvf.mha"),
                   "fixed": os.path.relpath(data / row["fixed"], out),
                   "max_abs_mm": round(float(np.abs(r).max()), 4)}
            write_text_atomic(folder / "row.json", json.dumps(new))
        done.append(json.loads((folder / "row.json").read_text()))
    write_manifest(out / "manifest.csv", done)
    before = np.mean([float(r["max_abs_mm"]) for r in rows])
    after = np.mean([float(r["max_abs_mm"]) for r in done])
    log.info("%d residual pairs in %s; mean largest component %.2f mm before, %.2f mm after "
             "the earlier stages", len(done), out, before, after)
    return len(done)
