"""Train and ship the multi-stage CT model (configs/multistage_ct.yaml) with one command.

    python scripts/train_multistage.py [--data ../shared/data] [--work /tmp/regnet-multistage]
        [--workers 2] [--device auto] [--refine-only | --ship-only]

The recipe is in configs/recipes.yaml (``ct_4mm``, ``ct_refine_2mm``): the scans, checked by
sha256, the seeds and the step counts.

Stage 0 (``ct_4mm``: 4 mm, displacements up to 40 mm) is the seed's network fine-tuned from the
shipped 2 mm model on artificial pairs of every kind (deformMethod 0-5) made from 17 CTs of
``lung-ct`` and ``ct-various``; ``openkbp_validation_pt209`` and ``lung2_image`` validate.

The refinement stage (``ct_refine_2mm``, configs/ct_refine.yaml) is ``ct_lung_2mm`` fine-tuned,
with displacement classes of 0.75 / 1.5 / 3 mm, on what the chain below leaves (``regnet
residuals``, Dsmooth 0 and 4) plus the original pairs, all made at 2 mm from central crops
(``CROP_MM``) of its recipe's scans, so that registering each pair takes seconds rather than
minutes on a CPU; ``lung2_image`` validates.

The packed model runs ``ct_lung_2mm`` at 8 mm (its prediction scaled by 4), then stage 0 at
4 mm, then ``ct_lung_2mm`` at its own 2 mm, then the refinement stage at 2 mm:
``src/regnet/models/ct_multistage.pt``, the default for CT, a small file that refers to the two
trained stages shipped as models of their own. Every step resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parent))
from recipe import ROOT, recipe_config, recipe_scans, recipe_steps  # noqa: E402

from regnet.inference.models import pack_stages  # noqa: E402
from regnet.inference.residuals import make_residuals  # noqa: E402
from regnet.io.images import write_image  # noqa: E402
from regnet.network.checkpoint import (  # noqa: E402
    INDEX,
    MODELS_DIR,
    STAGE_KEYS,
    load_checkpoint,
    save_checkpoint,
    sha256,
)
from regnet.synthesis.generate import case_name, generate  # noqa: E402
from regnet.training.trainer import train  # noqa: E402

CROP_MM = (224.0, 224.0, 192.0)  # x, y, z: about the MR heads' size at 2 mm
NAME = "ct_multistage"


def central_crops(scans: list[str], out: Path, box_mm=CROP_MM) -> list[str]:
    """Write each scan's central box of at most ``box_mm`` (x, y, z) to ``out`` (a crop already
    there is kept); returns the crops' paths."""
    crops = []
    for scan in scans:
        target = out / f"{case_name(scan)}.nii.gz"
        if not target.exists():
            image = sitk.ReadImage(scan)
            size = [min(n, round(b / s)) for n, b, s in zip(image.GetSize(), box_mm,
                                                            image.GetSpacing(), strict=True)]
            index = [(n - k) // 2 for n, k in zip(image.GetSize(), size, strict=True)]
            write_image(sitk.RegionOfInterest(image, size, index), target)
        crops.append(str(target))
    return crops


def best_identity(run: Path) -> float:
    """The identity's validation EPE (mm) logged by the run (TensorBoard scalars)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return events.Scalars("val/epe_identity")[-1].value


def ship_stage(best: Path, name: str, **entry) -> None:
    """Ship a checkpoint's weights and config as the model ``name`` and index it with
    ``entry`` (modality, anatomy, spacing, validation), so that multi-stage files refer to it."""
    state = load_checkpoint(best)
    target = MODELS_DIR / f"{name}.pt"
    save_checkpoint(target, {k: state[k] for k in STAGE_KEYS if k in state})
    index = json.loads(INDEX.read_text())
    index["models"][name] = {"file": target.name, "sha256": sha256(target), **entry}
    INDEX.write_text(json.dumps(index, indent=1) + "\n")


def ship(stage0: Path, refine: Path, validations: dict) -> Path:
    """Ship the two trained stages as models of their own (``ct_4mm``, ``ct_refine_2mm``) and
    ``ct_multistage``, which refers to them and to ``ct_lung_2mm`` (a small file).
    ``validations``: one line per model name."""
    anatomy = "chest, abdomen, head and neck"
    ship_stage(stage0, "ct_4mm", modality="CT", anatomy=anatomy,
               spacing="4 mm, stage 1 of ct_multistage", validation=validations["ct_4mm"])
    ship_stage(refine, "ct_refine_2mm", modality="CT", anatomy=anatomy,
               spacing="2 mm, refinement stage of ct_multistage",
               validation=validations["ct_refine_2mm"])
    target = pack_stages(["ct_lung_2mm@8", "ct_4mm", "ct_lung_2mm", "ct_refine_2mm"],
                         MODELS_DIR / f"{NAME}.pt")
    index = json.loads(INDEX.read_text())
    index["models"][NAME] = {"file": target.name, "sha256": sha256(target), "modality": "CT",
                             "anatomy": anatomy,
                             "spacing": "stages 8, 4, 2 mm, then a 2 mm refinement stage",
                             "validation": validations[NAME],
                             "intensity_p1_p99": index["models"]["ct_lung_2mm"].get(
                                 "intensity_p1_p99")}
    INDEX.write_text(json.dumps(index, indent=1) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default="/tmp/regnet-multistage")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--refine-only", action="store_true",
                        help="keep WORK/run0/best.pt as stage 0; train the refinement stage")
    parser.add_argument("--ship-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    run, refine = work / "run0", work / "refine"
    if not (args.ship_only or args.refine_only):
        config = recipe_config("ct_4mm", "ct_4mm")
        generate(recipe_scans("ct_4mm", args.data), work / "pairs0", config, seed=0,
                 workers=args.workers)
        summary = train([work / "pairs0"], run, config, steps=recipe_steps("ct_4mm", "ct_4mm"),
                        resume=(run / "last.pt").exists(), device=args.device,
                        init="ct_lung_2mm")
        logging.info("stage 0: best validation EPE %.2f mm", summary["best_val_epe_mm"])
    if not args.ship_only:
        chain = pack_stages(["ct_lung_2mm@8", run / "best.pt", "ct_lung_2mm"], work / "chain.pt")
        crops = central_crops(recipe_scans("ct_refine_2mm", args.data), work / "crops")
        config = recipe_config("ct_refine_2mm", "ct_refine_2mm")
        generate(crops, work / "pairs_crops", config, seed=0, workers=args.workers)
        make_residuals(work / "pairs_crops", chain, work / "residuals", device=args.device,
                       dsmooth=[0, 4])
        summary = train([work / "residuals", work / "pairs_crops"], refine, config,
                        steps=recipe_steps("ct_refine_2mm", "ct_refine_2mm"),
                        resume=(refine / "last.pt").exists(), device=args.device,
                        init="ct_lung_2mm")
        logging.info("refinement stage: best validation EPE %.2f mm", summary["best_val_epe_mm"])
    validations = {
        "ct_4mm": f"patch EPE {load_checkpoint(run / 'best.pt')['best']:.2f} mm vs identity "
                  f"{best_identity(run):.2f} (validation patients, motion < 40 mm)",
        "ct_refine_2mm": f"patch EPE {load_checkpoint(refine / 'best.pt')['best']:.2f} mm vs "
                         f"identity {best_identity(refine):.2f} (validation patient's residuals, "
                         "motion < 3 mm)",
        NAME: "see MODEL_CARD_MULTISTAGE.md (held-out chest CT, the seed's three fields and "
              "large motion, elastix in the same run)"}
    print(ship(run / "best.pt", refine / "best.pt", validations))


if __name__ == "__main__":
    main()
