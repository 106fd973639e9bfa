"""Endpoint error of identity, RegNet and elastix on held-out artificial pairs, per DVF type.

    python benchmarks/accuracy.py --model NAME|PATH --data PAIRS_DIR --case lung2_left
        [--dsmooth 0]

The pairs come from `regnet generate` on a scan the model never trained on (for the shipped
model: the left half of lung2, see scripts/train_default_model.py). EPE is the mean over body
voxels (fixed image above -500 HU) at least K voxels from the border.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402

from regnet.evaluation.elastix import elastix_bspline  # noqa: E402
from regnet.inference.models import load_model  # noqa: E402
from regnet.inference.register import register  # noqa: E402
from regnet.io.dvf import read_dvf  # noqa: E402
from regnet.io.images import read_image  # noqa: E402
from regnet.sampling.classes import margin_mask  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--dsmooth", type=int, default=0)
    args = parser.parse_args()
    print(header())
    model = load_model(args.model)
    rows = [r for r in csv.DictReader(open(Path(args.data) / "manifest.csv"))
            if r["case"] == args.case and int(r["dsmooth"]) == args.dsmooth and r["role"] == "F"]
    print(f"# model {model.source}; pairs of {args.case}, Dsmooth {args.dsmooth}\n")
    print("| DVF type | max |u| (mm) | identity EPE | RegNet EPE | elastix EPE | RegNet s "
          "| elastix s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        fixed_path = Path(args.data) / row["fixed"]
        moving_path = Path(args.data) / row["moving"]
        truth, _ = read_dvf(Path(args.data) / row["dvf"])
        fixed = read_image(fixed_path)
        select = (sitk.GetArrayFromImage(fixed) > -500) & margin_mask(
            truth.shape[:-1], model.config.sampling.K)
        result = register(fixed_path, moving_path, model=model)
        elastix_dvf, elastix_s = elastix_bspline(fixed, read_image(moving_path))

        def epe(dvf, select=select, truth=truth):
            return float(np.linalg.norm(dvf[select] - truth[select], axis=-1).mean())

        print(f"| {row['frequency']} | {float(row['max_abs_mm']):.1f} | "
              f"{epe(np.zeros_like(truth)):.2f} | {epe(result.dvf_mm):.2f} | "
              f"{epe(elastix_dvf):.2f} | {result.summary['seconds_total']:.1f} | "
              f"{elastix_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
