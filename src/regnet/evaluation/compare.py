"""``regnet compare``: RegNet next to elastix B-spline on the same pair, evaluated the same way."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import SimpleITK as sitk

from regnet.errors import fail
from regnet.evaluation.elastix import elastix_bspline
from regnet.evaluation.metrics import endpoint_error
from regnet.geometry.jacobian import jacobian_determinant, jacobian_summary
from regnet.inference.register import register
from regnet.io.atomic import write_text_atomic
from regnet.io.dvf import read_dvf, write_dvf
from regnet.io.images import read_image, resample_to_grid, same_grid

log = logging.getLogger(__name__)


def compare(fixed, moving, truth=None, model=None, device="auto", out=None) -> dict:
    """Register with both methods; return times, Jacobian statistics and (with a truth) EPE."""
    fixed_img, moving_img = read_image(fixed), read_image(moving)
    truth_mm = None
    if truth:
        truth_mm, truth_grid = read_dvf(truth)
        if not same_grid(truth_grid, fixed_img):
            raise fail(truth, "the true DVF must lie on the fixed image's grid")
    regnet_result = register(fixed_img, moving_img, model=model, device=device)
    moving_on_fixed = moving_img if same_grid(moving_img, fixed_img) else resample_to_grid(
        moving_img, fixed_img, float(sitk.GetArrayViewFromImage(moving_img).min()))
    elastix_dvf, elastix_s = elastix_bspline(fixed_img, moving_on_fixed)
    rows = {"regnet": (regnet_result.dvf_mm, regnet_result.summary["seconds_total"]),
            "elastix": (elastix_dvf, elastix_s)}
    results = {}
    for name, (dvf_mm, seconds) in rows.items():
        entry = {"seconds": round(seconds, 2), **jacobian_summary(
            jacobian_determinant(dvf_mm, fixed_img.GetSpacing()))}
        if truth_mm is not None:
            epe = endpoint_error(dvf_mm, truth_mm)
            entry["epe_mean_mm"] = epe["epe"]["mean"]
            entry["epe_p95_mm"] = epe["epe"]["p95"]
            entry["identity_epe_mean_mm"] = epe["identity"]["mean"]
        results[name] = entry
        if out:
            write_dvf(dvf_mm, fixed_img, Path(out) / f"dvf_{name}.nii.gz")
    results["elastix_over_regnet_time"] = round(elastix_s / max(
        regnet_result.summary["seconds_total"], 1e-9), 2)
    if out:
        write_text_atomic(Path(out) / "compare.json", json.dumps(results, indent=1))
    return results


def compare_command(args) -> int:
    results = compare(args.fixed, args.moving, args.truth, args.model, args.device, args.out)
    print(f"{'method':<10}{'time (s)':>10}{'EPE mean':>10}{'EPE p95':>10}{'identity':>10}"
          f"{'jac min':>9}{'fold %':>8}")
    for name in ("regnet", "elastix"):
        r = results[name]
        cells = "".join(f"{r[k]:10.3f}" if k in r else f"{'-':>10}"
                        for k in ("epe_mean_mm", "epe_p95_mm", "identity_epe_mean_mm"))
        print(f"{name:<10}{r['seconds']:10.2f}{cells}{r['jac_min']:9.3f}"
              f"{100 * r['jac_nonpositive_fraction']:8.3f}")
    print(f"elastix / RegNet wall time: {results['elastix_over_regnet_time']:.2f}x")
    return 0
