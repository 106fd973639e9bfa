"""Check that ANTs applies RegNet's DVF files exactly as RegNet does.

antspyx pins numpy < 2.4 and scipy < 1.16, so it lives in a venv of its own:

    .venv/bin/python scripts/check_ants.py --make /tmp/antscheck      # RegNet's venv
    python3.11 -m venv /tmp/antsenv && /tmp/antsenv/bin/pip install antspyx
    /tmp/antsenv/bin/python scripts/check_ants.py --check /tmp/antscheck

``--make`` writes a moving image, a smooth DVF on an oblique, anisotropic fixed grid in every
``--dvf-format`` and RegNet's own warp of the moving image; ``--check`` warps the moving image
with ``ants.apply_transforms`` through each DVF file and prints the largest difference inside
the image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("nii", "nii.gz", "mha")


def make(folder: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from regnet.geometry.warp import warp_image
    from regnet.io.dvf import write_dvf
    from tests.conftest import make_image, smooth_volume

    folder.mkdir(parents=True, exist_ok=True)
    moving = make_image(smooth_volume((30, 40, 36), seed=1))  # rotated, 1.3x0.7x2.1 mm
    fixed = make_image(smooth_volume((30, 40, 36), seed=2))
    z, y, x = np.meshgrid(*[np.linspace(0, np.pi, n) for n in (30, 40, 36)], indexing="ij")
    dvf = np.stack([1.5 * np.sin(y), -1.0 * np.cos(x), 2.0 * np.sin(z + x)], -1)
    dvf = dvf.astype(np.float32)
    sitk.WriteImage(moving, str(folder / "moving.nii.gz"))
    sitk.WriteImage(warp_image(moving, dvf, fixed), str(folder / "moved_regnet.nii.gz"))
    for fmt in FORMATS:
        write_dvf(dvf, fixed, folder / f"dvf.{fmt}")
    print(f"wrote {folder}")


def check(folder: Path) -> int:
    import ants
    import numpy as np

    moving = ants.image_read(str(folder / "moving.nii.gz"))
    expected = ants.image_read(str(folder / "moved_regnet.nii.gz"))
    inside = np.abs(expected.numpy()) > 0  # RegNet fills outside points with 0
    worst = 0.0
    for fmt in FORMATS:
        moved = ants.apply_transforms(expected, moving, [str(folder / f"dvf.{fmt}")],
                                      interpolator="linear")
        diff = np.abs(moved.numpy() - expected.numpy())[inside]
        print(f"dvf.{fmt:<7} ANTs {ants.__version__}: max |ANTs - RegNet| = {diff.max():.4f} "
              f"(image range {np.ptp(expected.numpy()):.0f}), mean {diff.mean():.5f}")
        worst = max(worst, float(np.percentile(diff, 99)))
    return 0 if worst < 0.5 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--make", type=Path)
    group.add_argument("--check", type=Path)
    args = parser.parse_args()
    sys.exit(make(args.make) or 0 if args.make else check(args.check))
