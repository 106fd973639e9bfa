"""What predicting on a lattice and interpolating costs in endpoint error, against the exact
prediction at every voxel (all 2^n phases), on artificial pairs: every 2nd voxel per axis (one
phase, the network's own stride) and every 4th (sparse).

    python benchmarks/interpolation.py --model NAME|PATH --data PAIRS_DIR [--pairs 3]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402

from regnet.inference.models import load_model  # noqa: E402
from regnet.inference.register import register  # noqa: E402
from regnet.io.dvf import read_dvf  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--data", required=True, help="folder with manifest.csv")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--case", help="only pairs of this case (e.g. the held-out one)")
    args = parser.parse_args()
    print(header())
    model = load_model(args.model)
    rows = list(csv.DictReader(open(Path(args.data) / "manifest.csv")))
    rows = [r for r in rows if not args.case or r["case"] == args.case][: args.pairs]
    margin = model.config.sampling.K
    print("\n| pair | EPE sparse (4 voxels) + interpolation (mm) | EPE one phase (2 voxels) + "
          "interpolation (mm) | EPE all phases (mm) | time sparse / one / all (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        truth, _ = read_dvf(Path(args.data) / row["dvf"])
        inner = tuple(slice(margin, -margin) for _ in range(truth.ndim - 1))
        result = {}
        for phases in ("sparse", "one", "all"):
            t0 = time.perf_counter()
            dvf = register(Path(args.data) / row["fixed"], Path(args.data) / row["moving"],
                           model=model, phases=phases).dvf_mm
            result[phases] = (float(np.linalg.norm(dvf[inner] - truth[inner], axis=-1).mean()),
                              time.perf_counter() - t0)
        epe = " | ".join(f"{result[p][0]:.3f}" for p in result)
        seconds = " / ".join(f"{result[p][1]:.1f}" for p in result)
        print(f"| {row['case']} {row['frequency']} Dsmooth{row['dsmooth']} | {epe} | "
              f"{seconds} |", flush=True)


if __name__ == "__main__":
    main()
