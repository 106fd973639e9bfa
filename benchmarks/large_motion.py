"""Large motion on data held out from training: identity, single-stage RegNet, multi-stage
RegNet and elastix, in one run.

    python benchmarks/large_motion.py --liver ../shared/data/liver-mr-4d \
        --ct ../shared/data/ct-various/fnndsc_LIDC-IDRI-0314_chest_ct.nii.gz \
        [--model MULTI] [--single ct_lung_2mm] [--prealign none] [--old-chain] [--quick]
        [--box-mm X Y Z]

Artificial cases on a held-out CT (resampled to 2 mm, the shipped model's spacing): the seed's
low / medium / high fields (MaxDeform 20 / 15 / 15 mm, sigmas halved to keep their size in mm),
a 30 mm low-frequency variant, and respiratory fields of 10 and 25 mm. EPE (mean, p95) over
body voxels (> -500 HU), and the mean over those body voxels whose true correspondence lies
inside the moving image (the seed's synthesis fills what moves in from beyond the image with
0 HU, which counts as body, and no image holds the answer there). Real cases: the 4 liver MR
pairs (landmark TRE inside the liver and outside it). Every row gives the share of folding
voxels (Jacobian <= 0, body or whole image) and the wall time. ``--quick`` runs one
artificial case and one liver pair. ``--box-mm X Y Z`` adds the EPE mean over the body voxels
inside the central box of that extent (the part of the scan a central crop of that size
keeps) and outside it.
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

from regnet.config import SynthesisConfig  # noqa: E402
from regnet.evaluation.elastix import elastix_bspline  # noqa: E402
from regnet.evaluation.metrics import target_registration_error  # noqa: E402
from regnet.geometry.faces import maps_inside  # noqa: E402
from regnet.geometry.jacobian import jacobian_determinant  # noqa: E402
from regnet.inference.models import load_model  # noqa: E402
from regnet.inference.register import register  # noqa: E402
from regnet.io.images import read_image, resample_isotropic  # noqa: E402
from regnet.io.landmarks import read_landmarks  # noqa: E402
from regnet.synthesis.pairs import make_pair  # noqa: E402

LIVER_PAIRS = [("dataset19", "cyc_1_6"), ("dataset19", "cyc_1_9"), ("dataset23", "cyc_1_4"),
               ("dataset23", "cyc_5_4")]


def artificial_cases(ct_path: str, quick: bool):
    """``(name, fixed, moving, truth_mm)`` on the held-out CT at 2 mm."""
    source = resample_isotropic(read_image(ct_path), 2.0)
    base = SynthesisConfig(sigmaB=(17.5, 12.5, 10.0), Border=16, DistanceDeform=20,
                           DistanceArea=10)
    kinds = [("seed low 20 mm", 0, base), ("seed medium 15 mm", 1, base),
             ("seed high 15 mm", 2, base),
             ("low 30 mm", 0, dataclasses.replace(base, MaxDeform=(30, 15, 15))),
             ("respiratory 10 mm", 3, SynthesisConfig(RespiratoryMinDeform=10,
                                                      RespiratoryMaxDeform=10)),
             ("respiratory 25 mm", 3, SynthesisConfig(RespiratoryMinDeform=25,
                                                      RespiratoryMaxDeform=25))]
    for k, (name, d, config) in enumerate(kinds[:1] if quick else kinds):
        pair = make_pair(source, d, config, np.random.default_rng([7, k]))
        yield name, pair.fixed, source, pair.dvf_mm


def liver_cases(folder: Path, quick: bool):
    for volunteer, state in LIVER_PAIRS[:1] if quick else LIVER_PAIRS:
        v = folder / volunteer
        fixed = read_image(v / "exhMaster_unmasked.force_direction.mha")
        moving = read_image(v / f"{state}.force_direction.mha")
        marks = {part: (read_landmarks(v / f"exhMasterLM{part}.vtk"),
                        read_landmarks(v / f"{state}LM{part}.vtk"))
                 for part in ("liver", "outside")}
        yield f"liver MR {volunteer}/{state}", fixed, moving, marks


def central_box(image: sitk.Image, box_mm) -> np.ndarray:
    """``(z, y, x)`` bool: the voxels within ``box_mm`` (x, y, z) centred on the image."""
    inside = np.ones(image.GetSize()[::-1], bool)
    for axis, (n, spacing, extent) in enumerate(zip(image.GetSize(), image.GetSpacing(), box_mm,
                                                    strict=True)):
        keep = np.abs(np.arange(n) - (n - 1) / 2) * spacing <= extent / 2
        inside &= keep.reshape([-1 if a == 2 - axis else 1 for a in range(3)])
    return inside


def folding(dvf_mm, grid, body) -> str:
    det = jacobian_determinant(dvf_mm, grid.GetSpacing())
    return f"{100 * (det[body] <= 0).mean():.3f} / {100 * (det <= 0).mean():.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ct", required=True, help="a CT the model never trained on")
    parser.add_argument("--liver", help="the liver-mr-4d folder")
    parser.add_argument("--model", default="ct_multistage", help="the multi-stage model")
    parser.add_argument("--single", default="ct_lung_2mm", help="the single-stage model")
    parser.add_argument("--prealign", default="none")
    parser.add_argument("--smooth", type=float, default=2.0)
    parser.add_argument("--old-chain", action="store_true",
                        help="also the single-stage model applied at 8, 4, 2 mm + rigid")
    parser.add_argument("--methods", nargs="+", default=["identity", "single", "multi",
                                                          "elastix"],
                        help="which of identity, single, multi, elastix to run")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--box-mm", nargs=3, type=float,
                        help="also the EPE inside and outside the central box of X Y Z mm")
    parser.add_argument("--flips", nargs="+", type=int, default=[None],
                        help="mirrored passes per fine stage of the multi-stage model, one row "
                             "each (default: the model's own)")
    args = parser.parse_args()
    print(header())
    model, single = load_model(args.model), load_model(args.single)
    stages = "/".join(f"{m.stage_spacing_mm:g}" for m in model.stages or [model])
    multi = f"multi-stage {stages} mm" + (f" + {args.prealign}" if args.prealign != "none"
                                          else "")
    print(f"# multi-stage model {model.source}; single-stage model {single.source}; "
          f"held-out CT {Path(args.ct).name}\n")
    box = " EPE mean in the central box / outside (% of body inside) |" if args.box_mm else ""
    print("| case | method | EPE mean | EPE p95 | EPE mean, answer in image (% of body) | "
          "folding % (body / all) | seconds | kept |" + box)
    print("|---|---|---|---|---|---|---|---|" + "---|" * bool(box))

    def methods(fixed, moving):
        t0 = time.perf_counter()
        if "identity" in args.methods:
            yield "identity", None, time.perf_counter() - t0, ""
        variants = [(f"single-stage, smoothed {args.smooth:g}", single,
                     {"smooth_vox": args.smooth})] if "single" in args.methods else []
        if "multi" in args.methods:
            variants += [(multi + (f", flips {flips}" if flips else ""), model,
                          {"prealign_kind": args.prealign, "flips": flips})
                         for flips in args.flips]
        if args.old_chain:
            variants.append(("single-stage model at 8/4/2 mm + rigid", single,
                             {"stages": (8, 4, 2), "prealign_kind": "rigid",
                              "smooth_vox": args.smooth}))
        for name, chosen, kwargs in variants:
            t0 = time.perf_counter()
            result = register(fixed, moving, model=chosen, **kwargs)
            kept = "".join("y" if s["kept"] else "n" for s in result.summary["stages"])
            yield name, result.dvf_mm, time.perf_counter() - t0, kept
        if "elastix" in args.methods:
            dvf, seconds = elastix_bspline(fixed, moving)
            yield "elastix B-spline", dvf, seconds, ""

    for name, fixed, moving, truth in artificial_cases(args.ct, args.quick):
        body = sitk.GetArrayFromImage(fixed) > -500
        held = maps_inside(truth, fixed, moving)[body]
        inner = central_box(fixed, args.box_mm)[body] if args.box_mm else None
        for method, dvf, seconds, kept in methods(fixed, moving):
            dvf = np.zeros_like(truth) if dvf is None else dvf
            err = np.linalg.norm(dvf - truth, axis=-1)[body]
            print(f"| {name} | {method} | {err.mean():.2f} | {np.percentile(err, 95):.2f} | "
                  f"{err[held].mean():.2f} ({100 * held.mean():.1f}) | "
                  f"{folding(dvf, fixed, body)} | {seconds:.1f} | {kept} |"
                  + ("" if inner is None else f" {err[inner].mean():.2f} / "
                     f"{err[~inner].mean():.2f} ({100 * inner.mean():.1f}) |"), flush=True)
    if not args.liver:
        return
    print("\n| case | method | liver TRE mean | liver TRE p95 | outside TRE mean | "
          "folding % (body / all) | seconds | kept |")
    print("|---|---|---|---|---|---|---|---|")
    for name, fixed, moving, marks in liver_cases(Path(args.liver), args.quick):
        array = sitk.GetArrayFromImage(fixed)
        body = array > np.percentile(array, 30)
        for method, dvf, seconds, kept in methods(fixed, moving):
            shape = fixed.GetSize()[::-1] + (3,)
            dvf = np.zeros(shape, np.float32) if dvf is None else dvf
            tre = {part: target_registration_error(dvf, fixed, p, q)["after"]
                   for part, (p, q) in marks.items()}
            print(f"| {name} | {method} | {tre['liver']['mean']:.2f} | "
                  f"{tre['liver']['p95']:.2f} | {tre['outside']['mean']:.2f} | "
                  f"{folding(dvf, fixed, body)} | {seconds:.1f} | {kept} |", flush=True)


if __name__ == "__main__":
    main()
