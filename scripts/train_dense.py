"""Train a dense network as a CT stage with one command: the U-Net at 4 mm
(configs/dense_ct_4mm.yaml), the cost-volume network at 4 mm (configs/corrnet_ct_4mm.yaml) or
at 2 mm (configs/dense_ct_2mm.yaml), the 2 mm one grown by a fine cost volume
(configs/corrnet_ct_2mm_fine.yaml: the 2 mm run's pairs, from its best checkpoint), and that
one grown by a refinement at full resolution (configs/corrnet_ct_2mm_full.yaml); the 2 mm one
without normalisation or with instance normalisation, from the start on the 2 mm pairs
(configs/corrnet_ct_2mm_nonorm.yaml, configs/corrnet_ct_2mm_instance.yaml), and the
instance-normalised one grown by both levels at once
(configs/corrnet_ct_2mm_instance_full.yaml); the 4 mm cost-volume network with instance
normalisation, on the 4 mm pairs (configs/corrnet_ct_4mm_instance.yaml); the 2 mm one with
both levels, trained on at a constant learning rate as the moving average of its weights
(configs/corrnet_ct_2mm_instance_ema.yaml), and that one fine-tuned on what the CT default's 8
and 4 mm stages leave (configs/corrnet_ct_2mm_residual.yaml), then so on whole scans
(configs/corrnet_ct_2mm_whole.yaml), and that one grown by a cost volume on full-resolution
voxels, on the same data (configs/corrnet_ct_2mm_whole_full.yaml).

    python scripts/train_dense.py [--stage 4mm|4mm-corr|2mm|2mm-fine|2mm-full|2mm-nonorm|
        2mm-instance|2mm-instance-full|2mm-instance-ema|2mm-residual|2mm-whole|
        2mm-whole-full|4mm-instance]
        [--data ../shared/data] [--work DIR] [--steps N] [--workers 2] [--device auto] [--plot]

The pairs: ``regnet generate`` (seed 0) at 4 mm on the CTs of ``lung-ct`` and ``ct-various``
except the held-out LIDC-IDRI-0314 and scans too small for a 4 mm patch reach; at 2 mm on
central crops (224 x 224 x 192 mm) of the ``ct_4mm`` recipe's 17 CTs (configs/recipes.yaml,
checked by sha256). ``openkbp_validation_pt209`` and ``lung2_image`` validate.
``WORK/pairs/generation.yaml`` lists every scan with its sha256. Then ``regnet train`` for the
config's steps (seed 0), resuming from ``WORK/run/last.pt`` when there is one: a run stopped
by Ctrl-C or a time limit goes on where it stopped. The validation curve is in
``WORK/run/tensorboard``; ``--plot`` writes it as ``WORK/curve.png``.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk

from regnet.config import load_config

sys.path.insert(0, str(Path(__file__).parent))
from recipe import ROOT, recipe_scans  # noqa: E402
from train_multistage import central_crops  # noqa: E402

STAGES = {"4mm": ROOT / "configs" / "dense_ct_4mm.yaml",
          "4mm-corr": ROOT / "configs" / "corrnet_ct_4mm.yaml",
          "2mm": ROOT / "configs" / "dense_ct_2mm.yaml",
          "2mm-fine": ROOT / "configs" / "corrnet_ct_2mm_fine.yaml",
          "2mm-full": ROOT / "configs" / "corrnet_ct_2mm_full.yaml",
          "2mm-nonorm": ROOT / "configs" / "corrnet_ct_2mm_nonorm.yaml",
          "2mm-instance": ROOT / "configs" / "corrnet_ct_2mm_instance.yaml",
          "2mm-instance-full": ROOT / "configs" / "corrnet_ct_2mm_instance_full.yaml",
          "2mm-instance-ema": ROOT / "configs" / "corrnet_ct_2mm_instance_ema.yaml",
          "2mm-residual": ROOT / "configs" / "corrnet_ct_2mm_residual.yaml",
          "2mm-whole": ROOT / "configs" / "corrnet_ct_2mm_whole.yaml",
          "2mm-whole-full": ROOT / "configs" / "corrnet_ct_2mm_whole_full.yaml",
          "4mm-instance": ROOT / "configs" / "corrnet_ct_4mm_instance.yaml"}
# grows that stage's best checkpoint
AFTER = {"2mm-fine": "2mm", "2mm-full": "2mm-fine", "2mm-instance-full": "2mm-instance",
         "2mm-instance-ema": "2mm-instance-full", "2mm-residual": "2mm-instance-ema",
         "2mm-whole": "2mm-residual", "2mm-whole-full": "2mm-whole"}
# trains from the start on that stage's pairs
BESIDE = {"2mm-nonorm": "2mm", "2mm-instance": "2mm", "4mm-instance": "4mm-corr"}
REGNET = [sys.executable, "-m", "regnet.cli"]
# the seed network's 2 mm stage on the same 24 validation pairs, for the 2 mm stages' curves
# (python benchmarks/stage_validation.py: docs/training.md)
SEED_2MM = {"ct_lung_2mm": 1.479}
# the seed network's 4 mm stage and its 8 + 4 mm chain on the 36 validation pairs of the 4 mm
# stages (docs/training.md)
SEED_4MM = {"ct_4mm": 7.409, "ct_lung_2mm@8 + ct_4mm": 7.376}
# a stage trained on what earlier stages leave: those stages (as `regnet models --pack` takes
# them), and whether it also trains on the 2 mm pairs (their residuals, and the pairs
# themselves in place of its own)
COARSE = ["ct_lung_2mm@8", "ct_4mm"]
EARLIER = {"2mm-residual": (COARSE, True), "2mm-whole": (COARSE, False)}
# trains on the data of that stage, made in its folder
DATA_OF = {"2mm-whole-full": "2mm-whole"}
HELD_OUT = "LIDC-IDRI-0314"  # benchmarks/breathing.py and large_motion.py register this one


def training_scans(data: Path, spacing_mm: float, min_voxels: int) -> list[str]:
    """CTs of ``lung-ct`` and ``ct-various`` whose every axis spans at least ``min_voxels``
    voxels of ``spacing_mm``, except the held-out one."""
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


def stage_scans(stage: str, data: Path, crops: Path) -> list[str]:
    """The scans a stage's pairs are made from: at 4 mm every CT that fits
    (:func:`training_scans`), at 2 mm central crops of the ``ct_4mm`` recipe's CTs, written
    into ``crops`` (``2mm-whole``: the whole CTs)."""
    if stage.startswith("4mm"):
        return training_scans(data, 4.0, 2 * 26 + 1)
    if stage == "2mm-whole":
        return recipe_scans("ct_4mm", str(data))
    return central_crops(recipe_scans("ct_4mm", str(data)), crops)


def plot_curve(run: Path, out: Path, references: dict[str, float] | None = None,
               crops: int = 4, crop_vox: int = 64) -> Path:
    """The validation EPE against steps of ``crops`` crops of ``crop_vox`` voxels, with the
    identity's and ``references`` (name -> mm, drawn as lines), as a PNG."""
    from regnet.reporting.figures import validation_curve_figure

    return validation_curve_figure(run / "tensorboard", out, "dense network",
                                   f"step ({crops} crops of {crop_vox} voxels)", references)


def residual_data(stage: str, work: Path, pairs: Path, config: Path, data: Path) -> list[Path]:
    """The data folders of a stage trained on residuals: what the ``EARLIER`` stages leave
    (``regnet residuals``; finished pairs are kept on a rerun) of its own pairs (``config``'s
    larger motion, made here) and, with the 2 mm ``pairs``, of those; then the pairs
    themselves (the 2 mm ``pairs`` where they join, else its own)."""
    earlier, with_pairs = EARLIER[stage]
    own = work / "pairs"
    if not (own / "manifest.csv").exists():
        scans = stage_scans(stage, data, work / "crops")
        subprocess.run([*REGNET, "generate", "--images", *scans, "--out", str(own), "--config",
                        str(config), "--seed", "0"], check=True)
    chain = work / "earlier.pt"
    if not chain.exists():
        subprocess.run([*REGNET, "models", "--pack", *earlier, "--out", str(chain)], check=True)
    residuals = {pairs: work / "residuals"} if with_pairs else {}
    residuals[own] = work / "residuals_large"
    for source, out in residuals.items():
        subprocess.run([*REGNET, "residuals", "--data", str(source), "--model", str(chain),
                        "--out", str(out)], check=True)
    return [*residuals.values(), pairs if with_pairs else own]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=sorted(STAGES), default="4mm")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", help="default: runs/ and the config's name")
    parser.add_argument("--steps", type=int, help="override the config's steps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plot", action="store_true", help="only write WORK/curve.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = STAGES[args.stage]
    work = Path(args.work or ROOT / "runs" / config.stem)
    before = ROOT / "runs" / STAGES[AFTER[args.stage]].stem if args.stage in AFTER else None
    source = DATA_OF.get(args.stage, args.stage)  # the stage whose data it trains on
    if args.plot:
        # the seed's figures are on the original pairs: none for a stage that validates on
        # residuals too
        references = (None if source in EARLIER else
                      SEED_4MM if args.stage.startswith("4mm") else SEED_2MM)
        print(plot_curve(work / "run", work / "curve.png", references,
                         crop_vox=load_config(config).network.crop))
        return
    work.mkdir(parents=True, exist_ok=True)
    home = work if source == args.stage else ROOT / "runs" / STAGES[source].stem
    first = source  # a grown stage trains on the pairs of the stage it grew from
    while first in AFTER or first in BESIDE:
        first = AFTER.get(first) or BESIDE[first]
    pairs = home / "pairs" if first == source else ROOT / "runs" / STAGES[first].stem / "pairs"
    needs_pairs = source not in EARLIER or EARLIER[source][1]
    if needs_pairs and not (pairs / "manifest.csv").exists():
        scans = stage_scans(source, Path(args.data), home / "crops")
        subprocess.run([*REGNET, "generate", "--images", *scans, "--out", str(pairs),
                        "--config", str(config), "--seed", "0", "--workers",
                        str(args.workers)], check=True)
    data = [pairs]
    if source in EARLIER:
        data = residual_data(source, home, pairs, config, Path(args.data))
    run = work / "run"
    command = [*REGNET, "train", "--data", *map(str, data), "--out", str(run), "--config",
               str(config), "--seed", "0", "--device", args.device]
    if args.steps:
        command += ["--steps", str(args.steps)]
    if (run / "last.pt").exists():
        command.append("--resume")
    elif before:
        command += ["--init", str(before / "run" / "best.pt")]
    sys.exit(subprocess.run(command).returncode)  # stopped (Ctrl-C): last.pt resumes it


if __name__ == "__main__":
    main()
