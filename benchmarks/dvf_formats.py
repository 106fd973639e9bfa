"""Writing and reading a clinical-size DVF in each format: time and size.

    python benchmarks/dvf_formats.py [--size 512 512 150]

A smooth float32 displacement field (like RegNet's output, interpolated from a 2 mm
prediction) on a 0.7x0.7x2 mm grid is written with SimpleITK as .nii.gz (gzip level 6, the
ITK default, and level 1), .nii, .mha and .mha compressed, then read back. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import SimpleITK as sitk
from _env import header
from scipy.ndimage import zoom

VARIANTS = [  # (label, file name, compress, level)
    ("nii.gz (gzip 6, ITK default)", "dvf.nii.gz", True, -1),
    ("nii.gz (gzip 1)", "dvf.nii.gz", True, 1),
    ("nii (raw)", "dvf.nii", False, -1),
    ("mha (raw)", "dvf.mha", False, -1),
    ("mha (zlib 1)", "dvf.mha", True, 1),
]


def smooth_field(size_xyz, seed=0) -> sitk.Image:
    """A smooth random field: coarse noise upsampled to ``size_xyz`` (float32, 3 components)."""
    rng = np.random.default_rng(seed)
    shape = tuple(reversed(size_xyz))
    coarse = rng.normal(scale=4.0, size=(3, *[max(2, s // 12) for s in shape]))
    field = np.stack([zoom(c, [s / c.shape[i] for i, s in enumerate(shape)], order=1)
                      for c in coarse], axis=-1).astype(np.float32)
    image = sitk.GetImageFromArray(field, isVector=True)
    image.SetSpacing((0.7, 0.7, 2.0))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", nargs=3, type=int, default=[512, 512, 150])
    args = parser.parse_args()
    field = smooth_field(args.size)
    print(header())
    print(f"DVF {tuple(args.size)} x 3 float32 = {np.prod(args.size) * 12 / 1e6:.0f} MB raw\n")
    print(f"{'format':<30}{'write s':>9}{'read s':>9}{'size MB':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for label, name, compress, level in VARIANTS:
            path = os.path.join(folder, name)
            t0 = time.perf_counter()
            sitk.WriteImage(field, path, compress, level)
            t1 = time.perf_counter()
            back = sitk.ReadImage(path)
            t2 = time.perf_counter()
            assert back.GetSize() == field.GetSize()
            print(f"{label:<30}{t1 - t0:>9.2f}{t2 - t1:>9.2f}{os.path.getsize(path) / 1e6:>9.0f}")
            os.unlink(path)


if __name__ == "__main__":
    main()
