"""The shipped models across modalities, on data held out from training, with elastix in the
same run.

    python benchmarks/modalities.py --data ../shared/data [--models auto ct_lung_2mm ...]
        [--normalization robust] [--methods identity regnet elastix] [--quick]

Cases, each registered by identity, every ``--models`` entry and elastix's default B-spline map:

* the seed's low / medium / high fields (MaxDeform 20 / 15 / 15 mm, sigmas in mm as at 1 mm)
  on a held-out CT (LIDC-IDRI-0314) and a held-out MR (niivue_chris_t1_head), both resampled
  to 2 mm: EPE over body voxels (CT > -500 HU; MR > 10 % of the 99th percentile), and its
  mean over the body voxels whose true correspondence lies inside the moving image;
* the 4 real liver MR pairs of ``liver-mr-4d``: landmark TRE inside the liver;
* MNI152 2009a onto Colin27 (both brain-extracted, inter-subject): NCC inside Colin27's brain,
  and Dice of three tissue classes (Otsu thresholds of each brain: CSF, grey, white matter).

``auto`` is ``regnet register`` with no ``--model``: the model chosen from the images.
``--normalization`` replaces the models' intensity normalisation (to measure that choice).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402
from large_motion import LIVER_PAIRS, folding, liver_cases  # noqa: E402

from regnet.config import SynthesisConfig  # noqa: E402
from regnet.errors import UsageError  # noqa: E402
from regnet.evaluation.elastix import elastix_bspline  # noqa: E402
from regnet.evaluation.metrics import dice, target_registration_error  # noqa: E402
from regnet.geometry.faces import maps_inside  # noqa: E402
from regnet.geometry.warp import warp_image  # noqa: E402
from regnet.inference.models import load_model  # noqa: E402
from regnet.inference.register import register  # noqa: E402
from regnet.inference.stages import ncc  # noqa: E402
from regnet.io.images import read_image, resample_isotropic  # noqa: E402
from regnet.synthesis.pairs import make_pair  # noqa: E402

HELD_OUT = {"CT": "ct-various/fnndsc_LIDC-IDRI-0314_chest_ct.nii.gz",
            "MR": "mr-various/niivue_chris_t1_head.nii.gz"}
BRAIN = ("brain-mr/colin27_t1_brain.nii.gz", "brain-mr/mni152_2009a_t1.nii.gz")


def body_mask(array: np.ndarray, modality: str) -> np.ndarray:
    return array > (-500 if modality == "CT" else 0.1 * np.percentile(array, 99))


def seed_cases(path: Path, quick: bool):
    """``(name, fixed, moving, truth_mm)``: the seed's three fields on ``path`` at 2 mm."""
    source = resample_isotropic(read_image(path), 2.0)
    config = SynthesisConfig(sigmaB=(17.5, 12.5, 10.0), Border=16, DistanceDeform=20,
                             DistanceArea=10)
    for d, name in enumerate(["low 20 mm", "medium 15 mm", "high 15 mm"][:1 if quick else 3]):
        pair = make_pair(source, d, config, np.random.default_rng([7, d]))
        yield name, pair.fixed, source, pair.dvf_mm


def tissue_labels(image: sitk.Image) -> sitk.Image:
    """Three classes inside the brain (> 0) by Otsu thresholds: 1 CSF, 2 grey, 3 white (the
    first of three thresholds parts the background from the brain)."""
    otsu = sitk.OtsuMultipleThresholds(image, numberOfThresholds=3)  # 0 background .. 3
    return sitk.Cast(otsu * sitk.Cast(image > 0, sitk.sitkUInt8), sitk.sitkUInt8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(Path(__file__).parents[2] / "shared" / "data"))
    parser.add_argument("--models", nargs="+", default=["auto"],
                        help="'auto' (chosen from the images), shipped names or checkpoints")
    parser.add_argument("--normalization", choices=["ct", "robust"],
                        help="override the models' normalisation")
    parser.add_argument("--methods", nargs="+", default=["identity", "regnet", "elastix"])
    parser.add_argument("--cases", nargs="+", default=["CT", "MR", "liver", "brain"])
    parser.add_argument("--quick", action="store_true", help="one field, one liver pair")
    parser.add_argument("--flips", nargs="+", type=int, default=[None],
                        help="mirrored passes per fine stage, one row each (default: the "
                             "model's own)")
    parser.add_argument("--presets", nargs="+", default=["own"],
                        help="the model's own setting ('own') and/or stored presets (fast, "
                             "accurate), one row each; a model without one skips that row")
    args = parser.parse_args()
    data = Path(args.data)
    print(header())
    models = {}
    for name in args.models:
        loaded = None if name == "auto" else load_model(name)
        if loaded is not None and args.normalization:
            for m in loaded.stages or [loaded]:
                m.config = dataclasses.replace(m.config, sampling=dataclasses.replace(
                    m.config.sampling, normalization=args.normalization))
        models[name] = loaded
    print(f"# models {args.models}; normalisation {args.normalization or 'as trained'}\n")

    def methods(fixed, moving):
        if "identity" in args.methods:
            yield "identity", None, 0.0, ""
        runs = [(n, m, f, p) for n, m in models.items() for f in args.flips
                for p in args.presets]
        for name, loaded, flips, preset in runs if "regnet" in args.methods else []:
            preset = None if preset == "own" else preset
            t0 = time.perf_counter()
            try:
                result = register(fixed, moving, model=loaded, flips=flips, preset=preset)
            except UsageError:  # a model without this preset
                continue
            chosen = Path(result.summary["model"]).stem
            yield f"RegNet {name}" + (f" ({chosen})" if name == "auto" else "") + (
                f" flips {flips}" if flips else "") + (
                f" --preset {preset}" if preset else ""), \
                result.dvf_mm, time.perf_counter() - t0, "".join(
                    "y" if s["kept"] else "n" for s in result.summary["stages"])
        if "elastix" in args.methods:
            dvf, seconds = elastix_bspline(fixed, moving)
            yield "elastix B-spline", dvf, seconds, ""

    rows = "| case | method | {} | folding % (body / all) | seconds | stages kept |"
    for modality in [m for m in ("CT", "MR") if m in args.cases]:
        print(rows.format("EPE mean | EPE p95 | EPE mean, answer in image (% of body)"))
        print("|---|---|---|---|---|---|---|---|")
        for name, fixed, moving, truth in seed_cases(data / HELD_OUT[modality], args.quick):
            body = body_mask(sitk.GetArrayFromImage(fixed), modality)
            held = maps_inside(truth, fixed, moving)[body]
            for method, dvf, seconds, kept in methods(fixed, moving):
                dvf = np.zeros_like(truth) if dvf is None else dvf
                err = np.linalg.norm(dvf - truth, axis=-1)[body]
                print(f"| {modality} {name} | {method} | {err.mean():.2f} | "
                      f"{np.percentile(err, 95):.2f} | {err[held].mean():.2f} "
                      f"({100 * held.mean():.1f}) | {folding(dvf, fixed, body)} | "
                      f"{seconds:.1f} | {kept} |", flush=True)
        print()
    if "liver" in args.cases:
        print(rows.format("liver TRE mean | liver TRE p95"))
        print("|---|---|---|---|---|---|---|")
        for name, fixed, moving, marks in liver_cases(data / "liver-mr-4d", args.quick):
            array = sitk.GetArrayFromImage(fixed)
            body = array > np.percentile(array, 30)
            p, q = marks["liver"]
            for method, dvf, seconds, kept in methods(fixed, moving):
                dvf = np.zeros(array.shape + (3,), np.float32) if dvf is None else dvf
                tre = target_registration_error(dvf, fixed, p, q)["after"]
                print(f"| {name} | {method} | {tre['mean']:.2f} | {tre['p95']:.2f} | "
                      f"{folding(dvf, fixed, body)} | {seconds:.1f} | {kept} |", flush=True)
        print(f"\n({len(LIVER_PAIRS)} pairs; average the rows per method for the mean TRE)\n")
    if "brain" in args.cases:
        fixed = sitk.Cast(read_image(data / BRAIN[0]), sitk.sitkFloat32)
        moving = sitk.Cast(read_image(data / BRAIN[1]), sitk.sitkFloat32)
        fixed_labels, moving_labels = tissue_labels(fixed), tissue_labels(moving)
        f = sitk.GetArrayFromImage(fixed)
        brain = f > 0
        print("| MNI152 -> Colin27 | method | NCC in brain | Dice CSF / grey / white (mean) | "
              "folding % (brain / all) | seconds | stages kept |")
        print("|---|---|---|---|---|---|---|")
        for method, dvf, seconds, kept in methods(fixed, moving):
            dvf = np.zeros(f.shape + (3,), np.float32) if dvf is None else dvf
            moved = sitk.GetArrayFromImage(warp_image(moving, dvf, fixed))
            labels = sitk.GetArrayFromImage(warp_image(
                moving_labels, dvf, fixed, interpolator=sitk.sitkNearestNeighbor,
                pixel_type=sitk.sitkUInt8))
            d = dice(sitk.GetArrayFromImage(fixed_labels), labels)
            per = " / ".join(f"{v:.3f}" for v in d["per_label"].values())
            print(f"| inter-subject | {method} | {ncc(f[brain], moved[brain]):.4f} | {per} "
                  f"({d['mean']:.3f}) | {folding(dvf, fixed, brain)} | {seconds:.1f} | "
                  f"{kept} |", flush=True)


if __name__ == "__main__":
    main()
