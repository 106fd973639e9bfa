"""Write synthetic scans rendered from random label maps (regnet.synthesis.labelmaps), to feed
``regnet generate`` like any other source images.

    python scripts/synthetic_scans.py OUT [--count 8] [--size 112 112 96] [--spacing 2]
        [--labels 16] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from regnet.io.atomic import atomic_path
from regnet.synthesis.labelmaps import synthetic_scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=3, default=[112, 112, 96], help="x y z voxels")
    parser.add_argument("--spacing", type=float, default=2.0, help="mm")
    parser.add_argument("--labels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k in tqdm(range(args.count), desc="synthetic scans"):
        path = out / f"synthetic_{args.seed}_{k:03d}.nii.gz"
        if path.exists():
            continue  # resumes
        image = synthetic_scan(args.size, args.spacing, np.random.default_rng([args.seed, k]),
                               args.labels)
        with atomic_path(path) as tmp:
            sitk.WriteImage(image, str(tmp))
    print(f"{args.count} synthetic scans in {out}")


if __name__ == "__main__":
    main()
