"""``regnet evaluate``: EPE, TRE, Jacobian and Dice of a DVF, as JSON and a readable table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from regnet.errors import RegNetError
from regnet.evaluation.metrics import dice, endpoint_error, target_registration_error
from regnet.geometry.jacobian import jacobian_determinant, jacobian_summary
from regnet.geometry.warp import warp_image
from regnet.inference import trust
from regnet.io.atomic import write_text_atomic
from regnet.io.dvf import read_dvf
from regnet.io.images import load_mask, read_image, resample_to_grid, same_grid
from regnet.io.landmarks import read_landmarks

log = logging.getLogger(__name__)


def evaluate(dvf_path, truth=None, fixed_landmarks=None, moving_landmarks=None,
             landmark_spacing=None, fixed_labels=None, moving_labels=None, mask=None) -> dict:
    """Every measure the inputs allow; see :mod:`regnet.evaluation.metrics`."""
    dvf_mm, grid = read_dvf(dvf_path)
    select = load_mask(mask, grid) if mask else None
    results: dict = {"dvf": str(dvf_path)}
    results["jacobian"] = jacobian_summary(jacobian_determinant(dvf_mm, grid.GetSpacing()),
                                           select)
    if truth:
        truth_mm, truth_grid = read_dvf(truth)
        if not same_grid(grid, truth_grid):
            raise RegNetError(f"{truth}: true DVF grid {truth_grid.GetSize()} @ "
                              f"{truth_grid.GetSpacing()} differs from {dvf_path}'s "
                              f"{grid.GetSize()} @ {grid.GetSpacing()}")
        results["endpoint_error_mm"] = endpoint_error(dvf_mm, truth_mm, select)
    if fixed_landmarks or moving_landmarks:
        if not (fixed_landmarks and moving_landmarks):
            raise RegNetError("TRE needs both --fixed-landmarks and --moving-landmarks")
        p = read_landmarks(fixed_landmarks, grid, landmark_spacing)
        q = read_landmarks(moving_landmarks, grid, landmark_spacing)
        results["tre_mm"] = target_registration_error(dvf_mm, grid, p, q)
    if fixed_labels or moving_labels:
        if not (fixed_labels and moving_labels):
            raise RegNetError("Dice needs both --fixed-labels and --moving-labels")
        fixed_lab = read_image(fixed_labels)
        moving_lab = read_image(moving_labels)
        nearest = sitk.sitkNearestNeighbor
        warped = warp_image(moving_lab, dvf_mm, grid, interpolator=nearest)
        fixed_on_grid = fixed_lab if same_grid(fixed_lab, grid) else resample_to_grid(
            fixed_lab, grid, 0.0, nearest)
        a = np.rint(sitk.GetArrayFromImage(fixed_on_grid)).astype(np.int64)
        b = np.rint(sitk.GetArrayFromImage(warped)).astype(np.int64)
        unwarped = resample_to_grid(moving_lab, grid, 0.0, nearest)
        c = np.rint(sitk.GetArrayFromImage(unwarped)).astype(np.int64)
        results["dice"] = {"before": dice(a, c), "after": dice(a, b)}
    results["warnings"] = trust_warnings(dvf_path, results["jacobian"])
    results["trusted"] = not results["warnings"]
    return results


def trust_warnings(dvf_path, jacobian: dict) -> list[str]:
    """This field's folding warning, plus the other warnings that ``regnet register`` wrote
    into a ``summary.json`` beside it (range, intensity, overlap)."""
    warnings = trust.collect(trust.folding_warning(jacobian["jac_nonpositive_fraction"]))
    summary_path = Path(dvf_path).parent / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            summary = {}
        warnings += [w for w in summary.get("warnings", []) if isinstance(w, str)
                     and not w.startswith("folding")]
    return warnings


def format_table(results: dict) -> str:
    """A plain-text table of the headline numbers."""
    lines = [f"{'measure':<36}{'value':>12}"]

    def add(name, value):
        lines.append(f"{name:<36}{'-' if value is None else format(value, '12.4f'):>12}")

    if "endpoint_error_mm" in results:
        e = results["endpoint_error_mm"]
        for key in ("mean", "median", "p95", "max"):
            add(f"EPE {key} (mm)", e["epe"].get(key))
        add("identity EPE mean (mm)", e["identity"].get("mean"))
        for name, value in e.items():
            if name.startswith("class"):
                add(f"EPE {name}", value["epe_mean"])
    if "tre_mm" in results:
        for when in ("before", "after"):
            add(f"TRE {when} mean (mm)", results["tre_mm"][when]["mean"])
            add(f"TRE {when} p95 (mm)", results["tre_mm"][when]["p95"])
    if "dice" in results:
        add("Dice mean before", results["dice"]["before"]["mean"])
        add("Dice mean after", results["dice"]["after"]["mean"])
    j = results["jacobian"]
    for key in ("jac_min", "jac_max", "jac_nonpositive_fraction"):
        add(key, j[key])
    lines += [f"WARNING {w}" for w in results.get("warnings", [])]
    return "\n".join(lines)


def evaluate_command(args) -> int:
    results = evaluate(args.dvf, args.truth, args.fixed_landmarks, args.moving_landmarks,
                       args.landmark_spacing, args.fixed_labels, args.moving_labels, args.mask)
    print(format_table(results))
    text = json.dumps(results, indent=1)
    if args.json:
        write_text_atomic(args.json, text)
    else:
        print(text)
    return 0
