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

RECIPE_COUNT = 10  # the MR recipes' synthetic scans (train_mr_model.py, train_half_width.py)


def write_synthetic_scans(out, count: int = 8, size_xyz=(112, 112, 96), spacing_mm: float = 2.0,
                          labels: int = 16, seed: int = 0) -> list[Path]:
    """Write ``count`` scans into ``out`` (kept where they exist: a rerun resumes)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in tqdm(range(count), desc="synthetic scans"):
        path = out / f"synthetic_{seed}_{k:03d}.nii.gz"
        if not path.exists():
            image = synthetic_scan(size_xyz, spacing_mm, np.random.default_rng([seed, k]),
                                   labels)
            with atomic_path(path) as tmp:
                sitk.WriteImage(image, str(tmp))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=3, default=[112, 112, 96], help="x y z voxels")
    parser.add_argument("--spacing", type=float, default=2.0, help="mm")
    parser.add_argument("--labels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_synthetic_scans(args.out, args.count, args.size, args.spacing, args.labels, args.seed)
    print(f"{args.count} synthetic scans in {args.out}")


if __name__ == "__main__":
    main()
