"""One stage's accuracy on generated validation pairs, measured alike for any network.

    python benchmarks/stage_validation.py --pairs runs/dense_ct_2mm/pairs \
        --config configs/dense_ct_2mm.yaml --models ct_lung_2mm runs/dense_ct_2mm/run/best.pt \
        [--split training --every 15] [--smooth-vox 2] [--flips 1 2 4] [--one-pass]

The validation pairs are those of the config's ``val_cases``; ``--split training`` judges
the training pairs instead (every ``--every``-th), to tell underfitting from overfitting.
Each model predicts the whole field of each pair in one stage, as a stage of ``regnet
register`` does (the seed's patch network on its stride-2 lattice, a dense network in one pass;
bf16 where the CPU computes it natively; no smoothing unless ``--smooth-vox`` asks), and the
endpoint error is averaged over the voxels the trainer's dense validation counts (every voxel
in a magnitude class), by class too. The numbers are comparable with the ``val/epe`` that
``regnet train`` logs for a dense network. A multi-stage model (``regnet models --pack``)
registers each pair as ``regnet register`` does, with its guard and smoothing: a chain of
stages judged alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402

from regnet.config import load_config  # noqa: E402
from regnet.devices import inference_dtype  # noqa: E402
from regnet.inference.dense import predict_field  # noqa: E402
from regnet.inference.models import load_model  # noqa: E402
from regnet.inference.register import register  # noqa: E402
from regnet.inference.stages import smooth_field  # noqa: E402
from regnet.network.registry import dense_crop  # noqa: E402
from regnet.sampling.classes import NO_CLASS  # noqa: E402
from regnet.sampling.stream import load_pair, read_manifests  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True, help="a folder of `regnet generate`")
    parser.add_argument("--config", required=True, help="its config (val_cases, classes)")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--split", choices=["validation", "training"], default="validation")
    parser.add_argument("--every", type=int, default=1, help="every K-th pair of the split")
    parser.add_argument("--smooth-vox", nargs="*", type=float, default=[],
                        help="also each one-stage field smoothed by these Gaussian sigmas "
                        "(voxels), as regnet register smooths the seed network's")
    parser.add_argument("--one-pass", action="store_true",
                        help="a dense network in one pass over each pair, also where it would "
                        "predict in crops (regnet.network.registry.dense_crop)")
    parser.add_argument("--flips", nargs="+", type=int, default=[1],
                        help="one-stage models: a row for each of these numbers of mirrored passes "
                        "averaged (regnet register --flips)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(header())
    config = load_config(args.config)
    sampling = config.sampling
    validation = args.split == "validation"
    pairs = [p for p in read_manifests([args.pairs], sampling.deformMethod)
             if (p.case in config.training.val_cases) == validation][::args.every]
    loaded = [load_pair(p, sampling) for p in pairs]
    images = [(sitk.ReadImage(p.fixed), sitk.ReadImage(p.moving)) for p in pairs]
    bounds = [0.0, *sampling.classBalanced]
    names = [f"[{a:g}, {b:g})" for a, b in zip(bounds, bounds[1:], strict=False)]
    cases = sorted({p.case for p in pairs})
    print(f"# {len(pairs)} {args.split} pairs of {cases}\n")
    print(f"| model | EPE, all (mm) | {' | '.join(names)} | seconds per pair |")
    print("|---|---|" + "---|" * len(names) + "---|")
    dtype = inference_dtype(torch.device("cpu"), "auto")
    rows = [("identity", None, 1)]
    for name in args.models:
        model = load_model(name)
        for flips in args.flips if not model.stages else [1]:
            rows.append((name if flips == 1 else f"{name}, {flips} mirrored passes", model,
                         flips))
    for name, model, flips in rows:
        one_stage = model is not None and not model.stages
        sigmas = [0.0] + (args.smooth_vox if one_stage else [])
        err_sum, counts = np.zeros((len(sigmas), len(names))), np.zeros(len(names))
        seconds = 0.0
        for pair, (fixed, moving) in zip(loaded, images, strict=True):
            t0 = time.perf_counter()
            if model is None:
                dvf = np.zeros_like(pair.dvf_mm)
            elif model.stages:
                dvf = register(fixed, moving, model, device="cpu").dvf_mm
            else:
                s = model.config.sampling
                dvf = predict_field(model.network, model.config.network.name, pair.moving,
                                    pair.fixed, "cpu", multi=s.Resolution == "multi", R=s.R,
                                    Rlow=s.Rlow, flips=flips, dtype=dtype,
                                    crop=None if args.one_pass
                                    else dense_crop(model.config.network))
            seconds += time.perf_counter() - t0
            inside = pair.classes != NO_CLASS
            np.add.at(counts, pair.classes[inside], 1)
            for k, sigma in enumerate(sigmas):
                smoothed = smooth_field(dvf.copy(), sigma) if sigma > 0 else dvf
                err = np.linalg.norm(smoothed - pair.dvf_mm, axis=-1)[inside]
                np.add.at(err_sum[k], pair.classes[inside], err)
        for k, sigma in enumerate(sigmas):
            by_class = " | ".join(f"{e / max(c, 1):.3f}" for e, c in zip(err_sum[k], counts,
                                                                        strict=True))
            label = f"{name}, smoothed {sigma:g} vox" if sigma > 0 else name
            print(f"| {label} | {err_sum[k].sum() / counts.sum():.3f} | {by_class} | "
                  f"{seconds / len(loaded):.1f} |", flush=True)


if __name__ == "__main__":
    main()
