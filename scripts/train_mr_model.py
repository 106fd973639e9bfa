"""Train and ship the MR models (configs/default_mr.yaml, configs/mr_refine.yaml) with one
command.

    python scripts/train_mr_model.py [--data ../shared/data] [--work /tmp/regnet-mr]
        [--workers 2] [--device auto] [--no-gpu-runs] [--ship-only]

The recipe is in configs/recipes.yaml (``mr_2mm``): the scans, checked by sha256, the seeds,
and the step count and settings of each of the five trainings below.

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
4. The shipped ``mr_2mm``: step 3's, fine-tuned (configs/mr_gpu.yaml: batch 128, lr 3e-4,
   2,000 steps; made for a GPU) on the head pairs drawn twice (seeds 0 and 1) and pairs from
   24 synthetic scans, then once more from its best checkpoint at lr 1.5e-4 (963 steps;
   validation every 200). ``--no-gpu-runs`` ships step 3's instead.
5. ``mr_half_2mm``: the shipped ``mr_2mm`` at half width, trained by
   ``scripts/train_half_width.py --modality MR`` (4,000 steps; in WORK/half).
6. ``mr_multistage``: ``mr_2mm`` at 8, 4, 3, 2.5, 2.25 and 2 mm, the refinement stage at 2 mm
   (trained after step 1's ``mr_2mm`` on what the 8, 4, 2 mm chain leaves, as shipped), then
   ``mr_half_2mm`` at 1.5 and 1.25 mm. The 3 and 2.5 mm stages lowered the validation
   proxy's mean error 2.42 -> 1.90 mm; two mirrored passes averaged at 4 mm and finer
   (``"flips": 2``) to 1.68 mm; step 4's ``mr_2mm`` to 1.54 mm, and with it the 2.25 mm
   stage to 1.45 mm; ``mr_2mm`` at 1.5 and 1.25 mm after the refinement stage to 1.18 mm.
   ``mr_half_2mm`` there, mirrored at both, is a little better on the validation FLAIR than
   ``mr_2mm`` with the 1.25 mm stage run once, for 25 % less time. Its own setting (``OWN``)
   leaves the refinement stage out; ``--preset accurate`` runs everything (``PRESETS``).

Split by subject:

* validation: ``niivue_flair_brain_skullstripped``;
* held out entirely: ``niivue_chris_t1_head`` (benchmarks/modalities.py deforms it), the whole
  of ``brain-mr`` (the MNI152 -> Colin27 check) and ``liver-mr-4d`` (evaluation only);
* too small at 2 mm (fewer than 33 voxels along z): the prostate and the abdomen MR.

Ships ``src/regnet/models/mr_2mm.pt``, ``mr_half_2mm.pt`` and ``mr_multistage.pt``, and makes
``mr_multistage`` the default for MR images (``default_mr`` in models.json). Every step resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from recipe import recipe_config, recipe_scans, recipe_steps  # scripts/ is on the path
from synthetic_scans import RECIPE_COUNT, write_synthetic_scans
from train_half_width import ship_half_width, train_half_width
from train_multistage import best_identity, ship_stage

from regnet.inference.models import pack_stages
from regnet.inference.residuals import make_residuals
from regnet.network.checkpoint import INDEX, MODELS_DIR, load_checkpoint, sha256
from regnet.synthesis.generate import generate
from regnet.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC_SCANS_GPU = 24  # the first RECIPE_COUNT (10) are step 3's
RESIDUAL_CHAIN = ["mr_2mm@8", "mr_2mm@4", "mr_2mm"]  # what the refinement stage learns after
CHAIN = ["mr_2mm@8", "mr_2mm@4", "mr_2mm@3", "mr_2mm@2.5", "mr_2mm@2.25", "mr_2mm"]  # before it
# after it: mr_2mm at 1.5 and 1.25 mm took validation 1.45 -> 1.18 mm; the half-width
# mr_half_2mm there (train_half_width.py) costs a third as much per pass
FINE = ["mr_half_2mm@1.5", "mr_half_2mm@1.25"]
FLIPS = 2  # mirrored passes averaged at stages of 4 mm and finer: validation 1.90 -> 1.68 mm
# the model's own setting and presets (benchmarks/presets.py on the validation FLAIR): the
# refinement stage (6) left out and every stage of 4 mm and finer mirrored; "accurate" runs
# the refinement stage too
OWN = {"flips": FLIPS, "flips_min_mm": 0, "drop_stages": [6]}
PRESETS = {"fast": {"drop_stages": [6, 8]}, "accurate": {"drop_stages": []}}


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
                   f"mr_half_2mm at 1.5 and 1.25 mm; by default without the refinement stage "
                   f"and with {FLIPS} mirrored passes from 4 mm down",
        "validation": "see MODEL_CARD_MR.md (held-out head MR, liver MR, MNI152 -> Colin27)",
        "own": OWN, "presets": PRESETS}
    index["default_mr"] = "mr_multistage"
    INDEX.write_text(json.dumps(index, indent=1) + "\n")


def run(name: str, pairs: list[Path], out: Path, init, device: str, workers: int | None = None,
        ship_only: bool = False) -> Path:
    """One training of the recipe (``name``: its entry under ``mr_2mm``), resumed where it
    stopped; returns the run folder."""
    if not ship_only:
        config = recipe_config("mr_2mm", name)
        if workers is not None:
            config = dataclasses.replace(config, training=dataclasses.replace(
                config.training, num_workers=workers))
        summary = train(pairs, out, config, steps=recipe_steps("mr_2mm", name),
                        resume=(out / "last.pt").exists(), device=device, init=init)
        logging.info("%s: best validation EPE %.2f mm", name, summary["best_val_epe_mm"])
    return out


def validation_line(run_dir: Path) -> str:
    best = load_checkpoint(run_dir / "best.pt")
    return (f"patch EPE {best['best']:.2f} mm vs identity {best_identity(run_dir):.2f} "
            "(validation subject's FLAIR, motion < 8 mm)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default="/tmp/regnet-mr")
    parser.add_argument("--workers", type=int, default=2, help="generation and loader processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-gpu-runs", action="store_true",
                        help="leave out step 4 (made for a GPU): ship step 3's mr_2mm")
    parser.add_argument("--ship-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    dev, pairs, synthetic_pairs = args.device, work / "pairs", work / "synthetic_pairs"
    if not args.ship_only:
        heads = recipe_scans("mr_2mm", args.data)
        generate(heads, pairs, recipe_config("mr_2mm", "heads"), seed=0, workers=args.workers)
    first = run("heads", [pairs], work / "run", "ct_lung_2mm", dev, ship_only=args.ship_only)
    ship_2mm(first / "best.pt", validation_line(first))
    if not args.ship_only:
        make_residuals(pairs, pack_stages(RESIDUAL_CHAIN, work / "chain.pt"),
                       work / "residuals", device=dev, dsmooth=[0, 2, 4, 6])
    refine = run("refine", [work / "residuals", pairs], work / "refine", first / "best.pt", dev,
                 ship_only=args.ship_only)
    if not args.ship_only:
        scans = write_synthetic_scans(work / "synthetic_scans", RECIPE_COUNT)
        generate([str(p) for p in scans], synthetic_pairs, recipe_config("mr_2mm", "synthetic"),
                 seed=0, workers=args.workers)
    last = run("synthetic", [pairs, synthetic_pairs], work / "synthetic_run", first / "best.pt",
               dev, ship_only=args.ship_only)
    if not args.no_gpu_runs:
        if not args.ship_only:
            generate(heads, work / "pairs_seed1", recipe_config("mr_2mm", "heads"), seed=1,
                     workers=args.workers)
            more = write_synthetic_scans(work / "synthetic_scans", SYNTHETIC_SCANS_GPU)
            generate([str(p) for p in more], synthetic_pairs, recipe_config("mr_2mm", "gpu"),
                     seed=0, workers=args.workers)
        for k, name in enumerate(("gpu", "gpu_half_lr")):
            last = run(name, [pairs, work / "pairs_seed1", synthetic_pairs], work / f"gpu_run{k}",
                       last / "best.pt", dev, args.workers, args.ship_only)
    ship_2mm(last / "best.pt", validation_line(last))
    if not args.ship_only:
        train_half_width("MR", Path(args.data), work / "half", args.workers, dev,
                         recipe_steps("mr_half_2mm", "mr_half_2mm"))
    ship_half_width("MR", work / "half" / "run")
    ship_multistage(refine / "best.pt")


if __name__ == "__main__":
    main()
