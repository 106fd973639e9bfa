"""Train and ship the MR models (configs/default_mr.yaml, configs/mr_refine.yaml) with one
command.

    python scripts/train_mr_model.py [--data ../shared/data] [--work /tmp/regnet-mr]
        [--minutes 75] [--steps 1200] [--refine-minutes 60] [--synthetic-minutes 40]
        [--gpu-minutes 5.4 2.6] [--workers 2] [--device auto] [--ship-only]

1. ``mr_2mm``: the seed's network at 2 mm, fine-tuned from the shipped CT model
   ``ct_lung_2mm`` with the per-image robust normalisation and random contrast curves, on
   artificial pairs (the seed's three kinds, eight Dsmooth variants each) made from the MR heads
   of ``mr-various`` that span at least 2 * Border voxels at 2 mm.
2. The refinement stage: ``mr_2mm`` run at 8, 4 and 2 mm registers the pairs of Dsmooth 0, 2, 4
   and 6 (``regnet residuals``); ``mr_2mm`` is fine-tuned on what it leaves plus the original
   pairs, with displacement classes of 0.75 / 1.5 / 3 mm.
3. An intermediate ``mr_2mm``: the first one fine-tuned on its pairs plus pairs from 10
   synthetic scans rendered from random label maps (``scripts/synthetic_scans.py``, the
   SynthMorph idea; configs/mr_synthetic.yaml).
4. The shipped ``mr_2mm``: step 3's, fine-tuned on a GPU (configs/mr_gpu.yaml:
   batch 128, lr 3e-4, 5.4 minutes, 2,000 steps on an H200) on the head pairs drawn twice
   (seeds 0 and 1) and pairs from 24 synthetic scans, then once more from its best checkpoint
   at lr 1.5e-4 (2.6 minutes, 963 steps; validation every 200). ``--gpu-minutes 0 0`` ships
   step 3's instead.
5. ``mr_multistage``: ``mr_2mm`` at 8, 4, 3, 2.5, 2.25 and 2 mm, the refinement stage at 2 mm
   (trained after step 1's ``mr_2mm`` on what the 8, 4, 2 mm chain leaves, as shipped), then
   ``mr_2mm`` at 1.5 and 1.25 mm. The 3 and 2.5 mm stages lowered the validation proxy's
   mean error 2.42 -> 1.90 mm; two mirrored passes averaged at 4 mm and finer
   (``"flips": 2``) to 1.68 mm; step 4's ``mr_2mm`` to 1.54 mm, and with it the 2.25 mm
   stage to 1.45 mm; ``mr_2mm`` at 1.5 and 1.25 mm after the refinement stage to 1.18 mm.

Split by subject:

* validation: ``niivue_flair_brain_skullstripped``;
* held out entirely: ``niivue_chris_t1_head`` (benchmarks/modalities.py deforms it), the whole
  of ``brain-mr`` (the MNI152 -> Colin27 check) and ``liver-mr-4d`` (evaluation only);
* too small at 2 mm (fewer than 33 voxels along z): the prostate and the abdomen MR.

Ships ``src/regnet/models/mr_2mm.pt`` and ``mr_multistage.pt``, and makes ``mr_multistage`` the
default for MR images (``default_mr`` in models.json). Every step resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from synthetic_scans import write_synthetic_scans  # scripts/ is on the path when run
from train_multistage import best_identity, ship_stage

from regnet.config import load_config
from regnet.inference.models import pack_stages
from regnet.inference.residuals import make_residuals
from regnet.network.checkpoint import INDEX, MODELS_DIR, load_checkpoint, sha256
from regnet.synthesis.generate import generate
from regnet.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "default_mr.yaml"
REFINE = ROOT / "configs" / "mr_refine.yaml"
SYNTHETIC = ROOT / "configs" / "mr_synthetic.yaml"
GPU = ROOT / "configs" / "mr_gpu.yaml"
SYNTHETIC_SCANS = 10
SYNTHETIC_SCANS_GPU = 24  # the first 10 are step 3's
RESIDUAL_CHAIN = ["mr_2mm@8", "mr_2mm@4", "mr_2mm"]  # what the refinement stage learns after
CHAIN = ["mr_2mm@8", "mr_2mm@4", "mr_2mm@3", "mr_2mm@2.5", "mr_2mm@2.25", "mr_2mm"]  # before it
FINE = ["mr_2mm@1.5", "mr_2mm@1.25"]  # after it: validation 1.45 -> 1.18 mm
FLIPS = 2  # mirrored passes averaged at stages of 4 mm and finer: validation 1.90 -> 1.68 mm
TRAINING = ["fnndsc_adi_memprage_t1_head", "fnndsc_adi_t2fse_head", "niivue_otsu_t1_head",
            "niivue_flair_brain_skullstripped"]  # the last validates (val_cases in the config)


def ship_2mm(best: Path, validation: str) -> None:
    """Ship the best checkpoint's weights and config as ``mr_2mm`` and index it."""
    ship_stage(best, "mr_2mm", modality="MR",
               anatomy="head (T1, T2, FLAIR), plus synthetic label-map scans",
               spacing="2 mm, one stage", validation=validation)  # pack_stages resolves it


def ship_multistage(refine: Path) -> None:
    """Pack ``mr_multistage`` (the chain, the refinement stage, then the finer stages), index it
    as the MR default."""
    target = pack_stages([*CHAIN, refine, *FINE], MODELS_DIR / "mr_multistage.pt")
    index = json.loads(INDEX.read_text())
    index["models"]["mr_multistage"] = {
        "file": target.name, "sha256": sha256(target), "modality": "MR",
        "anatomy": "head (T1, T2, FLAIR); any uncalibrated intensities",
        "spacing": "stages 8, 4, 3, 2.5, 2.25, 2 mm (mr_2mm), a 2 mm refinement stage, then "
                   f"mr_2mm at 1.5 and 1.25 mm; {FLIPS} mirrored passes at 4 mm and finer",
        "validation": "see MODEL_CARD_MR.md (held-out head MR, liver MR, MNI152 -> Colin27)",
        "flips": FLIPS}
    index["default_mr"] = "mr_multistage"
    INDEX.write_text(json.dumps(index, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default="/tmp/regnet-mr")
    parser.add_argument("--minutes", type=float, default=75.0)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--refine-minutes", type=float, default=60.0)
    parser.add_argument("--synthetic-minutes", type=float, default=40.0)
    parser.add_argument("--gpu-minutes", type=float, nargs=2, default=[5.4, 2.6],
                        help="step 4's two runs (0 0: ship step 3's mr_2mm)")
    parser.add_argument("--workers", type=int, default=2, help="generation and loader processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ship-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    run, refine, synthetic = work / "run", work / "refine", work / "synthetic_run"
    if not args.ship_only:
        config = load_config(CONFIG)
        heads = [str(Path(args.data) / "mr-various" / f"{name}.nii.gz") for name in TRAINING]
        generate(heads, work / "pairs", config, seed=0, workers=args.workers)
        summary = train([work / "pairs"], run, config, steps=args.steps,
                        resume=(run / "last.pt").exists(), device=args.device,
                        max_minutes=args.minutes, init="ct_lung_2mm")
        logging.info("best validation EPE %.2f mm", summary["best_val_epe_mm"])
    best = load_checkpoint(run / "best.pt")
    ship_2mm(run / "best.pt", f"patch EPE {best['best']:.2f} mm vs identity "
             f"{best_identity(run):.2f} (held-out subject's FLAIR, motion < 8 mm)")
    if not args.ship_only:
        chain = pack_stages(RESIDUAL_CHAIN, work / "chain.pt")
        make_residuals(work / "pairs", chain, work / "residuals", device=args.device,
                       dsmooth=[0, 2, 4, 6])
        summary = train([work / "residuals", work / "pairs"], refine, load_config(REFINE),
                        resume=(refine / "last.pt").exists(), device=args.device,
                        max_minutes=args.refine_minutes, init=run / "best.pt")
        logging.info("refinement stage: best validation EPE %.2f mm", summary["best_val_epe_mm"])
        config = load_config(SYNTHETIC)
        scans = write_synthetic_scans(work / "synthetic_scans", SYNTHETIC_SCANS)
        generate([str(p) for p in scans], work / "synthetic_pairs", config, seed=0,
                 workers=args.workers)
        summary = train([work / "pairs", work / "synthetic_pairs"], synthetic, config,
                        resume=(synthetic / "last.pt").exists(), device=args.device,
                        max_minutes=args.synthetic_minutes, init=run / "best.pt")
        logging.info("with synthetic scans: best validation EPE %.2f mm",
                     summary["best_val_epe_mm"])
    last = synthetic
    if max(args.gpu_minutes) > 0:
        config = load_config(GPU)
        if not args.ship_only:
            generate(heads, work / "pairs_seed1", load_config(CONFIG), seed=1,
                     workers=args.workers)
            more = write_synthetic_scans(work / "synthetic_scans", SYNTHETIC_SCANS_GPU)
            generate([str(p) for p in more], work / "synthetic_pairs", config, seed=0,
                     workers=args.workers)
        # the second run: half the learning rate, validated every 200 steps
        settings = [{}, {"lr": config.training.lr / 2, "val_every": 200}]
        for k, (minutes, changes) in enumerate(zip(args.gpu_minutes, settings, strict=True)):
            if minutes <= 0:
                continue
            run_k = work / f"gpu_run{k}"
            if not args.ship_only:
                config_k = dataclasses.replace(config, training=dataclasses.replace(
                    config.training, num_workers=args.workers, **changes))
                summary = train([work / "pairs", work / "pairs_seed1", work / "synthetic_pairs"],
                                run_k, config_k, resume=(run_k / "last.pt").exists(),
                                device=args.device, max_minutes=minutes,
                                init=last / "best.pt")
                logging.info("GPU fine-tuning %d: best validation EPE %.2f mm", k + 1,
                             summary["best_val_epe_mm"])
            last = run_k
    best = load_checkpoint(last / "best.pt")
    ship_2mm(last / "best.pt", f"patch EPE {best['best']:.2f} mm vs identity "
             f"{best_identity(last):.2f} (held-out subject's FLAIR, motion < 8 mm)")
    ship_multistage(refine / "best.pt")


if __name__ == "__main__":
    main()
