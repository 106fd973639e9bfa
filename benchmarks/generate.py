"""Seconds per artificial DVF + deformed image, for each DVF type, and peak memory.

    python benchmarks/generate.py [--lung ../shared/data/lung-ct/lung1_image.nrrd] [--repeat 2]

Prints a markdown table: a 256x256x160 synthetic volume, and the lung CT resampled to 1 mm.
Compares the fast separable blur with scipy's gaussian_filter on the same peaks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).parent))
from _env import header, peak_rss_mb  # noqa: E402

from regnet.config import SynthesisConfig  # noqa: E402
from regnet.io.images import read_image, resample_isotropic  # noqa: E402
from regnet.synthesis.fields import draw_peaks  # noqa: E402
from regnet.synthesis.pairs import make_pair  # noqa: E402


def time_volume(name, image, repeat, with_scipy):
    config = SynthesisConfig()
    rows = []
    for d in (0, 1, 2):
        times = []
        for r in range(repeat):
            t0 = time.perf_counter()
            make_pair(image, d, config, np.random.default_rng(r))
            times.append(time.perf_counter() - t0)
        scipy_s = float("nan")
        if with_scipy:
            shape = tuple(reversed(image.GetSize()))
            record = draw_peaks(shape, d, config, np.random.default_rng(0))
            volume = np.zeros(shape, np.float32)
            np.add.at(volume, tuple(record.peaks_zyx.T), 1.0)
            t0 = time.perf_counter()
            for _ in range(3):
                gaussian_filter(volume, record.sigma_vox)
            scipy_s = time.perf_counter() - t0
        rows.append((name, "x".join(map(str, image.GetSize())), d, min(times), scipy_s))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lung", default="../shared/data/lung-ct/lung1_image.nrrd")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-scipy", action="store_true")
    args = parser.parse_args()
    print(header())
    rng = np.random.default_rng(0)
    synthetic = sitk.GetImageFromArray(rng.normal(0, 100, (160, 256, 256)).astype(np.float32))
    rows = time_volume("synthetic", synthetic, args.repeat, not args.no_scipy)
    if Path(args.lung).exists():
        lung = resample_isotropic(read_image(args.lung), 1.0)
        rows += time_volume(Path(args.lung).name + " @1mm", lung, args.repeat, not args.no_scipy)
    print("\n| volume | size (x,y,z) | D | s per DVF + deformed image | scipy blur, 3 comps (s) |")
    print("|---|---|---|---|---|")
    for name, size, d, t, s in rows:
        print(f"| {name} | {size} | {d} | {t:.2f} | {s:.1f} |")
    print(f"\npeak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
