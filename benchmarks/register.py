"""End-to-end registration time and peak memory of the CT and MR defaults and their presets,
next to elastix's B-spline map: same pairs, same run, same machine.

    python benchmarks/register.py [--data ../shared/data] [--sizes 256x256x160 512x512x150]
        [--modalities CT MR] [--device cpu|cuda] [--repeat N] [--no-elastix] [--no-presets]
        [--ct-model MODEL]

Pairs: a chest CT (``lung-ct/lung1_image.nrrd``) and a head MR
(``mr-various/niivue_chris_t1_head.nii.gz``) resampled onto each ``--sizes`` grid (x, y, z):
by default 256x256x160 voxels of 1 mm centred on the scan, and a clinical 512x512x150 over
the CT's extent (0.57x0.57x1.6 mm); the fixed image deformed by the seed's low-frequency
field. The MR
pair is made at the first size only. RegNet runs as ``regnet register`` does with no
``--model``: the model chosen from the images, the outputs (dvf.nii, moved.nii, report,
summary.json) written; "end to end" is that whole call, after the imports. Elastix computes
its field in memory. A second table gives RegNet's time by part (the summary's
``seconds_parts``) for the model's own setting.

``--ct-model`` registers the CT pairs with another model (a checkpoint or a packed chain,
with its own presets) in place of the CT default. ``--repeat N`` registers the pair N more
times in the same process and reports the fastest (on a GPU the first run pays for CUDA's
start and cuDNN's autotuning).
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

SCANS = {"CT": "lung-ct/lung1_image.nrrd", "MR": "mr-various/niivue_chris_t1_head.nii.gz"}


def make_pair(path: Path, size: str, folder: str, name: str) -> tuple[str, str]:
    """The scan resampled onto a grid of ``size`` ("XxYxZ": over the scan's extent;
    "XxYxZ@S": S mm voxels centred on the scan), the fixed image deformed by the seed's
    low-frequency field; returns the two file paths."""
    from regnet.config import SynthesisConfig
    from regnet.io.images import read_image, resample_to_grid
    from regnet.synthesis.pairs import make_pair as artificial_pair

    image = read_image(path)
    voxels, _, spacing = size.partition("@")
    size_xyz = np.array([int(n) for n in voxels.split("x")])
    extent = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
    spacing_xyz = np.full(3, float(spacing)) if spacing else extent / size_xyz
    centre = image.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in image.GetSize()])
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    grid = sitk.Image([int(n) for n in size_xyz], sitk.sitkFloat32)
    grid.SetSpacing(tuple(float(v) for v in spacing_xyz))
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(tuple(np.asarray(centre) - direction @ ((size_xyz - 1) / 2 * spacing_xyz)))
    background = float(sitk.GetArrayViewFromImage(image).min())
    moving = resample_to_grid(image, grid, default=background)
    pair = artificial_pair(moving, 0, SynthesisConfig(), np.random.default_rng(0))
    paths = (f"{folder}/{name}_fixed.mha", f"{folder}/{name}_moving.mha")
    sitk.WriteImage(pair.fixed, paths[0])
    sitk.WriteImage(moving, paths[1])
    return paths


def run_regnet(fixed, moving, device, preset, repeat=0, model=None):
    """``repeat + 1`` runs in this process, each ``(end-to-end seconds, network seconds,
    seconds by part, model)``."""
    import time

    from regnet.inference.register import register

    rows = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        result = register(fixed, moving, model=model, device=device, preset=preset)
        with tempfile.TemporaryDirectory() as out:
            result.save(out)
            end_to_end = time.perf_counter() - t0
        parts = result.summary["seconds_parts"]
        rows.append((end_to_end, parts["network"], parts, Path(result.summary["model"]).stem))
    return rows


def run_elastix(fixed, moving):
    from regnet.evaluation.elastix import elastix_bspline
    from regnet.io.images import read_image

    _, seconds = elastix_bspline(read_image(fixed), read_image(moving))
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).parents[2] / "shared" / "data"))
    parser.add_argument("--sizes", nargs="+", default=["256x256x160@1", "512x512x150"],
                        help="XxYxZ over the scan's extent, XxYxZ@S: S mm voxels")
    parser.add_argument("--modalities", nargs="+", default=["CT", "MR"], choices=list(SCANS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=0, help="more runs in the same process")
    parser.add_argument("--no-elastix", action="store_true", help="time RegNet alone")
    parser.add_argument("--no-presets", action="store_true", help="the models' own setting only")
    parser.add_argument("--ct-model", help="a model for the CT pairs (default: the CT default)")
    args = parser.parse_args()
    print(header())
    from regnet.inference.models import load_model
    from regnet.network.checkpoint import shipped_models

    index = shipped_models()
    models = {"CT": args.ct_model, "MR": None}  # None: chosen from the images
    defaults = {"CT": index["default"], "MR": index["default_mr"]}
    presets = {m: [None] + ([] if args.no_presets else
                            list(load_model(path or defaults[m]).presets))
               for m, path in models.items()}
    print("\n| pair | size (x,y,z) | method | end to end (s) | network (s) | peak RSS (MB) | "
          "elastix / RegNet |\n|---|---|---|---|---|---|---|")
    breakdown = []
    with tempfile.TemporaryDirectory() as folder:
        for k, size in enumerate(args.sizes):
            for modality in [m for m in args.modalities if k == 0 or m == "CT"]:
                name = f"{modality}_{size.replace('@', '_')}"
                fixed, moving = make_pair(Path(args.data) / SCANS[modality], size, folder,
                                          name)
                timed = []
                for preset in presets[modality]:
                    rows, _, mb = in_fresh_process(run_regnet, fixed, moving, args.device,
                                                   preset, args.repeat, models[modality])
                    best = min(rows[1:] or rows)
                    label = f"RegNet {best[3]}" + (f" --preset {preset}" if preset else "")
                    timed.append((preset or "own", best[0]))
                    if preset is None:
                        breakdown.append((name, best[2]))
                    print(f"| {modality} | {size} | {label} ({args.device}) | {best[0]:.1f} | "
                          f"{best[1]:.1f} | {mb:.0f} | |", flush=True)
                if not args.no_elastix:
                    e_s, _, e_mb = in_fresh_process(run_elastix, fixed, moving)
                    ratios = ", ".join(f"{e_s / s:.2f}x {setting}" for setting, s in timed)
                    print(f"| {modality} | {size} | elastix B-spline (field in memory) | "
                          f"{e_s:.1f} | | {e_mb:.0f} | {ratios} |", flush=True)
    parts = list(dict.fromkeys(p for _, row in breakdown for p in row))
    print("\nRegNet's seconds by part (the model's own setting):\n")
    print("| pair | " + " | ".join(parts) + " |\n|---|" + "---|" * len(parts))
    for name, row in breakdown:
        print(f"| {name} | " + " | ".join(f"{row.get(p, 0):.2f}" for p in parts) + " |")


if __name__ == "__main__":
    main()
