"""Train the half-width seed networks (``network.width: 0.5``) with one command.

    python scripts/train_half_width.py --modality CT|MR [--data ../shared/data] [--work DIR]
        [--workers 2] [--device auto] [--steps N] [--ship]

A half-width network has a quarter of the seed network's weights and makes a 2 mm pass 2.7x
cheaper on a 2-core CPU (benchmarks/README.md). Seeds 0 throughout.

* ``CT`` (configs/ct_half_2mm.yaml, 6,000 steps): ``ct_lung_2mm``'s first channels
  (``--init`` narrows a wider network, ``regnet.network.regnet.narrowed_state``), trained on
  the 2 mm pairs of ``scripts/train_dense.py --stage 2mm`` (central crops of the ``ct_4mm``
  recipe's 17 CTs, made here when missing); ``openkbp_validation_pt209`` and ``lung2_image``
  validate. Ships ``ct_half_2mm``.
* ``MR`` (configs/mr_half_2mm.yaml, 4,000 steps): ``mr_2mm``'s first channels, trained on
  pairs of the head scans of its recipe (``mr_half_2mm`` in configs/recipes.yaml, checked by
  sha256; generated as for ``mr_2mm``) plus pairs from 10 synthetic label-map scans
  (``scripts/synthetic_scans.py``); the FLAIR subject validates. Ships ``mr_half_2mm``;
  ``scripts/train_mr_model.py`` runs this after shipping ``mr_2mm``.

Every step resumes: a rerun makes only missing pairs and continues the training from
``WORK/run/last.pt``. ``--ship`` copies the best checkpoint into the package and indexes it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recipe import ROOT, recipe_config, recipe_scans  # noqa: E402
from synthetic_scans import RECIPE_COUNT, write_synthetic_scans  # noqa: E402
from train_dense import stage_scans  # noqa: E402
from train_multistage import best_identity, ship_stage  # noqa: E402

from regnet.config import load_config  # noqa: E402
from regnet.network.checkpoint import load_checkpoint  # noqa: E402
from regnet.synthesis.generate import generate  # noqa: E402
from regnet.training.trainer import train  # noqa: E402

RECIPES = {
    "CT": {"name": "ct_half_2mm", "init": "ct_lung_2mm", "anatomy":
           "chest, abdomen, head and neck (17 CTs)", "validation": "two validation patients"},
    "MR": {"name": "mr_half_2mm", "init": "mr_2mm", "anatomy":
           "head (T1, T2, FLAIR), plus synthetic label-map scans",
           "validation": "validation subject's FLAIR, 24 pairs, motion < 8 mm"},
}


def make_pairs(modality: str, data: Path, work: Path, workers: int) -> list[Path]:
    """The pair folders a modality's half-width network learns from (made where missing)."""
    if modality == "CT":
        pairs = ROOT / "runs" / "dense_ct_2mm" / "pairs"
        if not (pairs / "manifest.csv").exists():
            generate(stage_scans("2mm", data, work / "crops"), pairs,
                     load_config(ROOT / "configs" / "dense_ct_2mm.yaml"), seed=0,
                     workers=workers)
        return [pairs]
    pairs, synthetic_pairs = work / "pairs", work / "synthetic_pairs"
    generate(recipe_scans("mr_half_2mm", data), pairs, recipe_config("mr_2mm", "heads"), seed=0,
             workers=workers)
    scans = write_synthetic_scans(work / "synthetic_scans", RECIPE_COUNT)
    generate([str(p) for p in scans], synthetic_pairs, recipe_config("mr_2mm", "synthetic"),
             seed=0, workers=workers)
    return [pairs, synthetic_pairs]


def train_half_width(modality: str, data: Path, work: Path, workers: int = 2,
                     device: str = "auto", steps: int | None = None) -> Path:
    """Make the pairs and train (resuming) one half-width network; returns its run folder."""
    recipe = RECIPES[modality]
    pairs = make_pairs(modality, data, work, workers)
    config = load_config(ROOT / "configs" / f"{recipe['name']}.yaml")
    run = work / "run"
    summary = train(pairs, run, config, steps=steps, resume=(run / "last.pt").exists(),
                    device=device, init=recipe["init"])
    logging.info("best validation EPE %.2f mm", summary["best_val_epe_mm"])
    return run


def ship_half_width(modality: str, run: Path) -> None:
    """Copy the run's best checkpoint into the package as the modality's half-width model."""
    recipe = RECIPES[modality]
    best = load_checkpoint(run / "best.pt")
    ship_stage(run / "best.pt", recipe["name"], modality=modality, anatomy=recipe["anatomy"],
               spacing="2 mm, one stage, half width",
               validation=f"patch EPE {best['best']:.2f} mm vs identity "
                          f"{best_identity(run):.2f} ({recipe['validation']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=sorted(RECIPES), required=True)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", help="default: runs/ and the model's name")
    parser.add_argument("--workers", type=int, default=2, help="generation processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--ship", action="store_true",
                        help="only ship the best checkpoint as a model of the package")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work or ROOT / "runs" / RECIPES[args.modality]["name"])
    if args.ship:
        ship_half_width(args.modality, work / "run")
    else:
        train_half_width(args.modality, Path(args.data), work, args.workers, args.device,
                         args.steps)


if __name__ == "__main__":
    main()
