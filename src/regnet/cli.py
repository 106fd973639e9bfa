"""The ``regnet`` command line: a thin layer over the library. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys

from regnet.errors import RegNetError, UsageError
from regnet.geometry.warp import INTERPOLATORS
from regnet.inference.options import (
    CHAINS,
    DVF_FORMATS,
    FLIPS,
    PHASES,
    PREALIGN,
    PRECISIONS,
    PRESETS,
    SMOOTH_VOX,
    RegisterOptions,
)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; None -> ``(0, 1)``."""
    if text is None:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not int(match[1]) < int(match[2]):
        raise UsageError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return int(match[1]), int(match[2])


def _generate(args) -> int:
    from regnet.config import load_config
    from regnet.synthesis.generate import generate

    summary = generate(args.images, args.out, load_config(args.config), seed=args.seed,
                       workers=args.workers, moving_images=args.moving_images,
                       shard=parse_shard(args.shard))
    print(f"generate: {summary.pairs} pairs written, manifest {summary.manifest}; "
          f"{len(summary.failed)} input(s) failed")
    for line in summary.failed:
        print(f"  failed: {line}")
    return 1 if summary.failed else 0


def _residuals(args) -> int:
    from regnet.inference.residuals import make_residuals

    count = make_residuals(args.data, args.model, args.out, device=args.device,
                           dsmooth=args.dsmooth)
    print(f"residuals: {count} pairs in {args.out}/manifest.csv")
    return 0


def _train(args) -> int:
    from regnet.config import load_config
    from regnet.training.trainer import train

    config = load_config(args.config, args.stage)
    if args.val_cases:
        import dataclasses

        config = dataclasses.replace(config, training=dataclasses.replace(
            config.training, val_cases=tuple(args.val_cases)))
    result = train(args.data, args.out, config, steps=args.steps,
                   resume=args.resume, device=args.device, seed=args.seed,
                   max_minutes=args.max_minutes, init=args.init)
    print(json.dumps(result, indent=1))
    return 0


def _register(args) -> int:
    options = {"report": not args.no_report, "dvf_format": args.dvf_format,
               "inverse": args.inverse, "options": RegisterOptions(
                   stages=args.stages and tuple(args.stages), prealign_kind=args.prealign,
                   guard=not args.no_guard, smooth_vox=args.smooth, chain=args.chain,
                   phases=args.phases, flips=args.flips, flips_min_mm=args.flips_min_mm,
                   max_memory_gb=args.max_memory_gb,
                   series=args.series and tuple(args.series), precision=args.precision,
                   preset=args.preset)}
    if args.pairs:
        if args.fixed or args.moving or args.fixed_mask or args.transform_out:
            raise UsageError("--pairs replaces --fixed/--moving/--fixed-mask/--transform-out; "
                             "give one or the other")
        from regnet.inference.batch import register_batch

        summary = register_batch(args.pairs, args.out, model=args.model, device=args.device,
                                 workers=args.workers, shard=parse_shard(args.shard), **options)
        print(f"register: {summary.line(args.out)}")
        return 1 if summary.failed else 0
    if not (args.fixed and args.moving):
        raise UsageError("give --fixed and --moving (or --pairs CSV)")
    if args.shard or args.workers != 1:
        raise UsageError("--shard and --workers go with --pairs")
    from regnet.inference.register import register_files

    result = register_files(args.fixed, args.moving, args.out, model=args.model,
                            fixed_mask=args.fixed_mask, device=args.device,
                            transform_out=args.transform_out, **options)
    print(json.dumps(result.summary, indent=1))
    return 0


def _apply(args) -> int:
    from regnet.propagate import apply_command

    return apply_command(args)


def _evaluate(args) -> int:
    from regnet.evaluation.cli import evaluate_command

    return evaluate_command(args)


def _compare(args) -> int:
    from regnet.evaluation.compare import compare_command

    return compare_command(args)


def _report(args) -> int:
    from regnet.reporting.report import report_files

    png, page = report_files(args.fixed, args.moving, args.dvf, args.out)
    print(f"report: {png} and {page}")
    return 0


def _models(args) -> int:
    from regnet.inference.models import pack_stages, shipped_model_lines

    if args.pack:
        if not args.out:
            raise UsageError("regnet models --pack STAGE.pt ... needs --out FILE")
        path = pack_stages(args.pack, args.out)
        print(f"models: wrote the {len(args.pack)}-stage model {path}")
        return 0
    for line in shipped_model_lines():
        print(line)
    return 0


def _demo(args) -> int:
    from regnet.demo import DEMO_AMPLITUDE_MM, run_demo

    run_demo(args.out, device=args.device, seed=args.seed,
             amplitude_mm=DEMO_AMPLITUDE_MM if args.amplitude is None else args.amplitude)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regnet", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="artificial training pairs from your scans")
    p.add_argument("--images", nargs="+", required=True, help="fixed scans, one per case")
    p.add_argument("--moving-images", nargs="+", help="optional moving scans (same order)")
    p.add_argument("--out", required=True)
    p.add_argument("--config", help="YAML config (section 'synthesis'; lengths in voxels, mm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--shard", help="i/n: make every n-th source from the i-th (job arrays); "
                   "shards may share --out")
    p.set_defaults(func=_generate)

    p = sub.add_parser("train", help="train a RegNet on generated pairs")
    p.add_argument("--data", nargs="+", required=True, help="folders holding manifest.csv")
    p.add_argument("--out", required=True, help="run folder (checkpoints, TensorBoard)")
    p.add_argument("--config", help="YAML config")
    p.add_argument("--steps", type=int, help="total optimisation steps (overrides config)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    p.add_argument("--max-minutes", type=float,
                   help="stop (and save) after this wall time; a cosine schedule then decays "
                        "by whichever of steps or time runs out first")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", metavar="MODEL", help="start from these weights (a checkpoint "
                   "or shipped model with the same network settings): fine-tuning")
    p.add_argument("--stage", type=int, metavar="K",
                   help="with a multi-stage --config: train its stage K (0 = the coarsest)")
    p.add_argument("--val-cases", nargs="+", help="validation cases (names from the "
                   "manifest); default: a share of the cases, or a slab of a single case")
    p.set_defaults(func=_train)

    p = sub.add_parser("register", help="register a pair (or a cohort) in one shot")
    p.add_argument("--fixed", help="fixed image (file or DICOM folder)")
    p.add_argument("--moving", help="moving image, resampled onto the fixed grid")
    p.add_argument("--pairs", help="CSV fixed,moving[,fixed_mask][,id]: register a cohort "
                   "into OUT/<id>/; done pairs are skipped, failures go to OUT/failures.csv")
    p.add_argument("--workers", type=int, default=1, help="with --pairs: processes")
    p.add_argument("--shard", help="with --pairs: i/n takes every n-th pair from the i-th")
    p.add_argument("--out", required=True)
    p.add_argument("--series", nargs="+", help="DICOM series UID(s) to read from folders "
                   "that hold several")
    p.add_argument("--dvf-format", default="nii", choices=DVF_FORMATS,
                   help="file format of dvf.* and moved.* (default nii: 10x faster to write "
                        "than nii.gz for a barely smaller file)")
    p.add_argument("--max-memory-gb", type=float, help="refuse images whose registration "
                   "would need more (default: the memory available)")
    p.add_argument("--stages", nargs="+", type=float, metavar="MM",
                   help="coarse-to-fine isotropic spacings in mm, e.g. 8 4 2, for large motion "
                        "(default: one stage at the model's spacing)")
    p.add_argument("--prealign", default="none", choices=PREALIGN,
                   help="global pre-alignment (SimpleITK, mutual information), composed into "
                        "the written DVF")
    p.add_argument("--smooth", type=float, default=SMOOTH_VOX, metavar="VOXELS",
                   help="Gaussian sigma applied to the network's output, in voxels of the "
                        "model grid (default 2: no folding; 0: the seed's raw output at every "
                        "stage); a stage packed with its own sigma keeps it unless this is 0")
    p.add_argument("--no-guard", action="store_true",
                   help="keep stages that lower the images' similarity (NCC)")
    p.add_argument("--chain", default="auto", choices=CHAINS,
                   help="multi-stage models: auto runs the finest stage alone and after the "
                        "coarser ones, keeps the result with the higher NCC, then refines it; "
                        "always: the chain only")
    p.add_argument("--phases", default="one", choices=PHASES,
                   help="where the seed network predicts before linear interpolation: every "
                        "2nd voxel per axis (one, the default), every 4th at stages of at most "
                        "2 mm (sparse: faster, less accurate) or every voxel (all: exact, 2^n "
                        "times one's time); README, 'Register your own pair'")
    p.add_argument("--flips", type=int, choices=FLIPS,
                   help="average this many passes over mirrored copies of the images at each "
                        "stage of at most 4 mm (default: the model's own: 2 for the MR default, "
                        "1 for the CT default; 1: one pass, the fastest)")
    p.add_argument("--flips-min-mm", type=float, metavar="MM",
                   help="mirrored passes only at stages of at least this spacing (default: the "
                        "model's own: 1.5 for the MR default, whose 1.25 mm stage runs once)")
    p.add_argument("--preset", choices=PRESETS,
                   help="a named setting the model stores: fast (fewer passes) or accurate "
                        "(more); default: the model's own; `regnet models` and the model "
                        "cards give each one's time and accuracy")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="the network's arithmetic: auto (the default) takes bf16 on a CPU that "
                        "computes it natively (AVX512-BF16, AMX) and on GPUs, else fp32")
    p.add_argument("--model", help="model name or checkpoint path (default: the shipped "
                   "model the images call for: CT or MR in 3D, chosen from their intensities "
                   "and logged; the 2D model in 2D; see `regnet models`)")
    p.add_argument("--fixed-mask", help="report Jacobian statistics inside this mask")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-report", action="store_true", help="skip report.png / report.html")
    p.add_argument("--inverse", action="store_true",
                   help="also write inverse_dvf.<fmt>, the inverse field on the moving grid "
                        "(moving points into the fixed image), and its consistency")
    p.add_argument("--transform-out", metavar="FILE",
                   help="also write the field as an ITK DisplacementFieldTransform file "
                        "(.h5 or .tfm; 3D Slicer, ANTs, SimpleITK's ReadTransform)")
    p.set_defaults(func=_register)

    p = sub.add_parser("apply", help="carry a registration to an image, a label map or "
                       "points, or invert it")
    p.add_argument("--dvf", required=True, help="the DVF that `regnet register` wrote")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="an image in moving space (any grid), resampled onto "
                      "the field's grid: out(x) = image(x + u(x))")
    what.add_argument("--points", help="fixed-space points (.pts, .csv in mm, DIR-Lab .txt, "
                      ".vtk), mapped into moving space: p + u(p)")
    what.add_argument("--invert", action="store_true",
                      help="write the inverse field (on --moving-grid) to --out")
    p.add_argument("--out", required=True, help="output image, landmark file (format from "
                   "its suffix: .pts, .csv, .txt, .vtk) or inverse field")
    p.add_argument("--interpolation", default="linear", choices=list(INTERPOLATORS),
                   help="label: per-label linear interpolation for label maps, no new values, "
                        "pixel type kept (default linear)")
    p.add_argument("--default", type=float, help="value where the image has nothing "
                   "(default: 0 for label and nearest, else the image's minimum)")
    p.add_argument("--inverse", action="store_true", help="go the other way: fixed-space "
                   "images onto the moving grid, moving-space points into fixed space")
    p.add_argument("--moving-grid", metavar="IMAGE", help="the moving image: the grid of the "
                   "inverse, and of DIR-Lab .txt output points (default: the field's grid)")
    p.set_defaults(func=_apply)

    p = sub.add_parser("evaluate", help="endpoint error, TRE, Jacobian, Dice of a DVF")
    p.add_argument("--dvf", required=True, help="DVF (ITK displacement field, mm)")
    p.add_argument("--truth", help="true DVF on the same grid")
    p.add_argument("--fixed-landmarks")
    p.add_argument("--moving-landmarks")
    p.add_argument("--landmark-spacing", nargs=3, type=float,
                   help="voxel spacing (x y z, mm) for DIR-Lab 1-based voxel text files")
    p.add_argument("--fixed-labels")
    p.add_argument("--moving-labels")
    p.add_argument("--mask", help="restrict EPE and Jacobian statistics to this mask")
    p.add_argument("--json", help="also write the results here")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("compare", help="RegNet next to elastix B-spline on one pair")
    p.add_argument("--fixed", required=True)
    p.add_argument("--moving", required=True)
    p.add_argument("--truth", help="true DVF, for endpoint error")
    p.add_argument("--model")
    p.add_argument("--out", default="compare_out")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_compare)

    p = sub.add_parser("report", help="report.png/html for any fixed, moving and DVF files")
    p.add_argument("--fixed", required=True)
    p.add_argument("--moving", required=True)
    p.add_argument("--dvf", required=True, help="ITK displacement field on the fixed grid (mm)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_report)

    p = sub.add_parser("residuals", help="pairs pre-registered by earlier stages, to train a "
                       "later stage on what they leave")
    p.add_argument("--data", required=True, help="a folder of `regnet generate` pairs")
    p.add_argument("--model", required=True, help="the earlier stage(s): a checkpoint or "
                   "multi-stage model")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--dsmooth", type=int, nargs="+", metavar="K",
                   help="only the pairs of these Dsmooth variants (default: all)")
    p.set_defaults(func=_residuals)

    p = sub.add_parser("models", help="list the shipped models, or pack stages into one "
                       "multi-stage model file")
    p.add_argument("--pack", nargs="+", metavar="MODEL[@MM][:smooth=VOX]",
                   help="stage checkpoints (from `regnet train --stage K`) or shipped names, "
                        "coarse to fine; @MM runs a stage at MM mm instead of its training "
                        "spacing (its prediction scaled by the ratio); :smooth=VOX smooths "
                        "its output by this Gaussian sigma in place of register's --smooth")
    p.add_argument("--out", help="with --pack: the multi-stage model file to write")
    p.set_defaults(func=_models)

    p = sub.add_parser("demo", help="register a built-in CT-like pair with the default model")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--amplitude", type=float,
                   help="the CT phantom's breathing amplitude (mm; default 37: a 25 mm field; "
                        "9: a 6.2 mm one)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else exc.__class__.__name__


def main(argv=None) -> int:
    """Run one command. Exit codes: 0 done, 1 bad data (or a failure while running), 2 bad
    usage (arguments, settings), 130 interrupted. Errors are one line on stderr; ``-v`` shows
    the traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    prefix = f"regnet {args.command}: error:"
    try:
        return args.func(args)
    except RegNetError as exc:
        if args.verbose:
            logging.getLogger("regnet").exception("traceback")
        print(f"{prefix} {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"regnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permissions, a path that cannot exist
        if args.verbose:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prefix} {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug of ours: still one line, the traceback with -v
        if args.verbose:
            raise
        print(f"{prefix} unexpected {exc.__class__.__name__}: {_one_line(exc)} (rerun with -v "
              "for the traceback, and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
