"""Train and ship the multi-stage CT model (configs/multistage_ct.yaml) with one command.

    python scripts/train_multistage.py [--data ../shared/data] [--work /tmp/regnet-multistage]
        [--minutes 45] [--workers 2] [--device auto] [--ship-only]

Stage 0 (4 mm, displacements up to 40 mm) is the seed's network fine-tuned from the shipped
2 mm model on artificial pairs of every kind (deformMethod 0-5) made from the CTs in
``lung-ct`` and ``ct-various``, except the held-out benchmark CT (LIDC-IDRI-0314) and scans
smaller than a 4 mm patch reach; ``openkbp_validation_pt209`` and ``lung2_image`` are the
validation cases. The packed model runs ``ct_lung_2mm`` at 8 mm (its prediction scaled by 4),
then stage 0 at 4 mm, then ``ct_lung_2mm`` at its own 2 mm: ``src/regnet/models/
ct_multistage.pt`` (opt-in: ``--model ct_multistage``; the default stays ``ct_lung_2mm``,
see its model card for why). Every step resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import SimpleITK as sitk

from regnet.config import load_config
from regnet.inference.models import INDEX, MODELS_DIR, pack_stages
from regnet.synthesis.generate import generate
from regnet.training.checkpoint import sha256
from regnet.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
MULTISTAGE = ROOT / "configs" / "multistage_ct.yaml"
HELD_OUT = "LIDC-IDRI-0314"  # benchmarks/large_motion.py registers this one
NAME = "ct_multistage"


def training_scans(data: Path, spacing_mm: float, min_voxels: int) -> list[str]:
    """CTs whose every axis spans at least ``min_voxels`` voxels of ``spacing_mm``."""
    scans = sorted((data / "lung-ct").glob("*.nrrd")) + sorted(
        (data / "ct-various").glob("*.nii.gz"))
    keep = []
    for path in scans:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        extent = [n * s / spacing_mm for n, s in zip(reader.GetSize(), reader.GetSpacing(),
                                                    strict=True)]
        if HELD_OUT not in path.name and min(extent) >= min_voxels:
            keep.append(str(path))
    return keep


def best_identity(run: Path) -> float:
    """The identity's validation EPE (mm) logged by the run (TensorBoard scalars)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return events.Scalars("val/epe_identity")[-1].value


def ship(stage0: Path, validation: str) -> Path:
    target = pack_stages(["ct_lung_2mm@8", stage0, "ct_lung_2mm"], MODELS_DIR / f"{NAME}.pt")
    index = json.loads(INDEX.read_text())
    index["models"][NAME] = {"file": target.name, "sha256": sha256(target), "modality": "CT",
                             "anatomy": "chest, abdomen, head and neck",
                             "spacing": "stages 8, 4, 2 mm", "validation": validation,
                             "intensity_p1_p99": index["models"]["ct_lung_2mm"].get(
                                 "intensity_p1_p99")}
    INDEX.write_text(json.dumps(index, indent=1) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default="/tmp/regnet-multistage")
    parser.add_argument("--minutes", type=float, default=45.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ship-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    config = load_config(MULTISTAGE, 0)
    run = work / "run0"
    if not args.ship_only:
        scans = training_scans(Path(args.data), config.synthesis.spacing_mm,
                               2 * config.sampling.K + 1)
        logging.info("stage 0 trains on %d scans", len(scans))
        generate(scans, work / "pairs0", config, seed=0, workers=args.workers)
        summary = train([work / "pairs0"], run, config, resume=(run / "last.pt").exists(),
                        device=args.device, max_minutes=args.minutes, init="ct_lung_2mm")
        logging.info("stage 0: best validation EPE %.2f mm", summary["best_val_epe_mm"])
    from regnet.training.checkpoint import load_checkpoint

    best = load_checkpoint(run / "best.pt")
    validation = (f"4 mm stage: patch EPE {best['best']:.2f} mm vs identity "
                  f"{best_identity(run):.2f} (held-out CTs, motion < 40 mm); see "
                  "MODEL_CARD_MULTISTAGE.md")
    print(ship(run / "best.pt", validation))


if __name__ == "__main__":
    main()
