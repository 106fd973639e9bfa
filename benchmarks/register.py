"""Registration wall time and peak memory: RegNet (one shot) next to elastix B-spline, same pair,
same run, same machine.

    python benchmarks/register.py [--model NAME|PATH] [--device cpu|cuda] [--skip-synthetic]
        [--lung ../shared/data/lung-ct/lung1_image.nrrd] [--repeat N] [--no-elastix]

``--repeat N`` registers the pair N more times in the same process and reports the fastest of
those too (on a GPU the first run pays for CUDA's start and cuDNN's autotuning). ``--no-elastix``
times RegNet alone (a GPU machine without itk-elastix).

Pairs: a 256x256x160 synthetic volume at 1 mm, and the lung CT resampled to isotropic 1.5 mm,
each deformed by the seed's low-frequency field. Timing does not depend on the weights: without a
shipped model, an untrained network of the seed's width is used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parent))
from _env import header, in_fresh_process  # noqa: E402


def make_pair(kind: str, lung: str, folder: str) -> tuple[str, str]:
    from regnet.config import SynthesisConfig
    from regnet.io.images import read_image, resample_isotropic
    from regnet.synthesis.pairs import make_pair as artificial_pair

    if kind == "synthetic":
        from scipy.ndimage import gaussian_filter

        rng = np.random.default_rng(0)
        array = gaussian_filter(rng.normal(size=(160, 256, 256)), 2.0).astype(np.float32)
        image = sitk.GetImageFromArray(1000 * array)
    else:
        image = resample_isotropic(read_image(lung), 1.5)
    pair = artificial_pair(image, 0, SynthesisConfig(), np.random.default_rng(0))
    paths = (f"{folder}/{kind}_fixed.mha", f"{folder}/{kind}_moving.mha")
    sitk.WriteImage(pair.fixed, paths[0])
    sitk.WriteImage(image, paths[1])
    return paths


def run_regnet(fixed, moving, model, device, repeat=0):
    """One row per run, ``repeat + 1`` runs in this process: ``(seconds of register(), of its
    network passes, with the outputs written as `regnet register` does: dvf.nii, moved.nii,
    the report and summary.json)``."""
    import time

    from regnet.inference.register import register

    rows = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        result = register(fixed, moving, model=model, device=device)
        with tempfile.TemporaryDirectory() as out:
            result.save(out)
            written = time.perf_counter() - t0
        rows.append((result.summary["seconds_total"], result.summary["seconds_network"],
                     written))
    return rows


def run_elastix(fixed, moving):
    from regnet.evaluation.elastix import elastix_bspline
    from regnet.io.images import read_image

    _, seconds = elastix_bspline(read_image(fixed), read_image(moving))
    return seconds


def untrained_model(folder: str) -> str:
    import torch

    from regnet.config import Config
    from regnet.network import build_network
    from regnet.network.checkpoint import save_checkpoint

    config = Config()
    path = f"{folder}/untrained.pt"
    save_checkpoint(path, {"config": config.to_dict(), "step": 0, "spacing_mm": 1.0,
                           "model": build_network(config.network).state_dict()})
    torch.set_num_threads(torch.get_num_threads())
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model name or checkpoint (default: shipped default)")
    parser.add_argument("--lung", default="../shared/data/lung-ct/lung1_image.nrrd")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--repeat", type=int, default=0, help="more runs in the same process")
    parser.add_argument("--no-elastix", action="store_true", help="time RegNet alone")
    args = parser.parse_args()
    print(header())
    from regnet.inference.models import shipped_models

    with tempfile.TemporaryDirectory() as folder:
        model = args.model or shipped_models().get("default") or untrained_model(folder)
        kinds = ([] if args.skip_synthetic else ["synthetic"]) + (
            ["lung"] if Path(args.lung).exists() else [])
        print(f"# model: {model}\n")
        print("| pair | size (x,y,z) | method | wall (s) | network (s) | with outputs written "
              "(s) | peak RSS (MB) | elastix / RegNet |")
        print("|---|---|---|---|---|---|---|---|")
        for kind in kinds:
            fixed, moving = make_pair(kind, args.lung, folder)
            size = "x".join(map(str, sitk.ReadImage(fixed).GetSize()))
            rows, _, r_mb = in_fresh_process(run_regnet, fixed, moving, model, args.device,
                                             args.repeat)
            runs = [("first run", rows[0])]
            if len(rows) > 1:
                runs.append((f"fastest of {len(rows) - 1} more", min(rows[1:])))
            for label, (r_s, r_net, r_written) in runs:
                print(f"| {kind} | {size} | RegNet ({args.device}, {label}) | {r_s:.2f} | "
                      f"{r_net:.2f} | {r_written:.2f} | {r_mb:.0f} | |", flush=True)
            if not args.no_elastix:
                r_s, _, r_written = runs[-1][1]
                e_s, e_wall, e_mb = in_fresh_process(run_elastix, fixed, moving)
                print(f"| {kind} | {size} | elastix B-spline (field in memory) | {e_s:.1f} | | | "
                      f"{e_mb:.0f} | {e_s / r_s:.2f}x ({e_s / r_written:.2f}x written) |",
                      flush=True)


if __name__ == "__main__":
    main()
