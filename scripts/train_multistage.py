"""Train and ship the multi-stage CT model (configs/multistage_ct.yaml) with one command.

    python scripts/train_multistage.py [--data ../shared/data] [--work /tmp/regnet-multistage]
        [--minutes 45] [--refine-minutes 50] [--workers 2] [--device auto]
        [--refine-only | --ship-only]

Stage 0 (4 mm, displacements up to 40 mm) is the seed's network fine-tuned from the shipped
2 mm model on artificial pairs of every kind (deformMethod 0-5) made from the CTs in
``lung-ct`` and ``ct-various``, except the held-out benchmark CT (LIDC-IDRI-0314) and scans
smaller than a 4 mm patch reach; ``openkbp_validation_pt209`` and ``lung2_image`` are the
validation cases.

The refinement stage (configs/ct_refine.yaml) is ``ct_lung_2mm`` fine-tuned, with displacement
classes of 0.75 / 1.5 / 3 mm, on what the chain below leaves (``regnet residuals``, Dsmooth 0
and 4) plus the original pairs, all made at 2 mm from central crops (``CROP_MM``) of
``REFINE_SCANS``, so that registering each pair takes seconds rather than minutes on a CPU;
``lung2_image`` validates.

The packed model runs ``ct_lung_2mm`` at 8 mm (its prediction scaled by 4), then stage 0 at
4 mm, then ``ct_lung_2mm`` at its own 2 mm, then the refinement stage at 2 mm:
``src/regnet/models/ct_multistage.pt``, the default for CT, a small file that refers to the two
trained stages shipped as models of their own (``ct_4mm``, ``ct_refine_2mm``). Every step
resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import SimpleITK as sitk

from regnet.config import load_config
from regnet.inference.models import pack_stages
from regnet.inference.residuals import make_residuals
from regnet.io.images import write_image
from regnet.network.checkpoint import (
    INDEX,
    MODELS_DIR,
    STAGE_KEYS,
    load_checkpoint,
    save_checkpoint,
    sha256,
)
from regnet.synthesis.generate import case_name, generate
from regnet.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
MULTISTAGE = ROOT / "configs" / "multistage_ct.yaml"
REFINE = ROOT / "configs" / "ct_refine.yaml"
REFINE_SCANS = ["lung-ct/lung1_image.nrrd", "lung-ct/lung2_image.nrrd",  # lung2 validates
                "ct-various/pyvista_PancreasCTCB001_abdomen_ct.nii.gz",
                "ct-various/pyvista_vtk_fullhead_ct.nii.gz"] + [
    f"ct-various/openkbp_train_pt{n}.nii.gz" for n in (14, 42, 106, 160, 182)]
CROP_MM = (224.0, 224.0, 192.0)  # x, y, z: about the MR heads' size at 2 mm
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
    parser.add_argument("--minutes", type=float, default=45.0)
    parser.add_argument("--refine-minutes", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--refine-only", action="store_true",
                        help="keep WORK/run0/best.pt as stage 0; train the refinement stage")
    parser.add_argument("--ship-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    config = load_config(MULTISTAGE, 0)
    run, refine = work / "run0", work / "refine"
    if not (args.ship_only or args.refine_only):
        scans = training_scans(Path(args.data), config.synthesis.spacing_mm,
                               2 * config.sampling.K + 1)
        logging.info("stage 0 trains on %d scans", len(scans))
        generate(scans, work / "pairs0", config, seed=0, workers=args.workers)
        summary = train([work / "pairs0"], run, config, resume=(run / "last.pt").exists(),
                        device=args.device, max_minutes=args.minutes, init="ct_lung_2mm")
        logging.info("stage 0: best validation EPE %.2f mm", summary["best_val_epe_mm"])
    if not args.ship_only:
        chain = pack_stages(["ct_lung_2mm@8", run / "best.pt", "ct_lung_2mm"], work / "chain.pt")
        crops = central_crops([str(Path(args.data) / scan) for scan in REFINE_SCANS],
                              work / "crops")
        generate(crops, work / "pairs_crops", load_config(REFINE), seed=0, workers=args.workers)
        make_residuals(work / "pairs_crops", chain, work / "residuals", device=args.device,
                       dsmooth=[0, 4])
        summary = train([work / "residuals", work / "pairs_crops"], refine, load_config(REFINE),
                        resume=(refine / "last.pt").exists(), device=args.device,
                        max_minutes=args.refine_minutes, init="ct_lung_2mm")
        logging.info("refinement stage: best validation EPE %.2f mm", summary["best_val_epe_mm"])
    validations = {
        "ct_4mm": f"patch EPE {load_checkpoint(run / 'best.pt')['best']:.2f} mm vs identity "
                  f"{best_identity(run):.2f} (held-out patients, motion < 40 mm)",
        "ct_refine_2mm": f"patch EPE {load_checkpoint(refine / 'best.pt')['best']:.2f} mm vs "
                         f"identity {best_identity(refine):.2f} (held-out patient's residuals, "
                         "motion < 3 mm)",
        NAME: "see MODEL_CARD_MULTISTAGE.md (held-out chest CT, the seed's three fields and "
              "large motion, elastix in the same run)"}
    print(ship(run / "best.pt", refine / "best.pt", validations))


if __name__ == "__main__":
    main()
