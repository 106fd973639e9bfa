"""Train the shipped default CT model from ../shared/data/lung-ct (resumable).

    python scripts/train_default_model.py --data ../shared/data/lung-ct --work /tmp/regnet-default
        [--steps N] [--device auto] [--ship]

lung1 and the right half of lung2 train; the left half of lung2 is held out for validation.
``--ship`` copies best.pt (weights and config only) into src/regnet/models/ and updates
models.json with its checksum.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import SimpleITK as sitk
import torch

from regnet.config import load_config
from regnet.io.images import read_image, resample_isotropic, write_image
from regnet.synthesis.generate import generate
from regnet.training.checkpoint import load_checkpoint, save_checkpoint, sha256
from regnet.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "default_ct.yaml"
MODELS = ROOT / "src" / "regnet" / "models"


def prepare_scans(data: Path, folder: Path, spacing_mm: float) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    lung1 = resample_isotropic(read_image(data / "lung1_image.nrrd"), spacing_mm)
    lung2 = resample_isotropic(read_image(data / "lung2_image.nrrd"), spacing_mm)
    half = lung2.GetSize()[0] // 2
    parts = {"lung1": lung1, "lung2_right": lung2[:half, :, :], "lung2_left": lung2[half:, :, :]}
    paths = []
    for name, image in parts.items():
        path = folder / f"{name}.mha"
        if not path.exists():
            write_image(sitk.Cast(image, sitk.sitkFloat32), path)
        paths.append(str(path))
    return paths


def validation_table(work: Path, state: dict) -> str:
    """Validation endpoint error per magnitude class next to identity, as a markdown table."""
    from regnet.sampling.stream import read_manifests
    from regnet.training.checkpoint import model_from_checkpoint
    from regnet.training.validation import draw_validation_centres, validate

    model, config = model_from_checkpoint(state)
    pairs = [p for p in read_manifests([work / "pairs"], config.sampling.deformMethod)
             if p.case in state["val_cases"]]
    centres = draw_validation_centres(pairs, config.sampling, state["seed"])
    result = validate(model, pairs, centres, config.sampling, torch.device("cpu"))
    lines = ["| magnitude class (max-norm) | RegNet EPE (mm) | identity EPE (mm) |",
             "|---|---|---|"]
    bounds = [0.0, *config.sampling.classBalanced]
    for c in range(len(bounds) - 1):
        lines.append(f"| [{bounds[c]:g}, {bounds[c + 1]:g}) mm | {result[f'epe_class{c}']:.2f} "
                     f"| {result[f'epe_identity_class{c}']:.2f} |")
    lines.append(f"| all ({result['samples']} patches) | {result['epe']:.2f} | "
                 f"{result['epe_identity']:.2f} |")
    return "\n".join(lines)


def ship(work: Path, name: str = "ct_lung_2mm") -> Path:
    run = work / "run"
    state = load_checkpoint(run / "best.pt")
    target = MODELS / f"{name}.pt"
    save_checkpoint(target, {k: state[k] for k in ("config", "model", "step", "spacing_mm",
                                                   "val_cases", "best", "seed")})
    print(validation_table(work, state))
    index_path = MODELS / "models.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"models": {}}
    index["default"] = name
    index["models"][name] = {"file": target.name, "sha256": sha256(target)}
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    return target


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lung-ct"))
    parser.add_argument("--work", default="/tmp/regnet-default")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ship", action="store_true", help="only ship the best checkpoint")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    if args.ship:
        print(ship(work))
        return
    config = load_config(CONFIG)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    scans = prepare_scans(Path(args.data), work / "scans", config.synthesis.spacing_mm)
    generate(scans, work / "pairs", config, seed=0, workers=2)
    resume = (work / "run" / "last.pt").exists()
    print(train([work / "pairs"], work / "run", config, steps=args.steps, resume=resume,
                device=args.device, seed=0))


if __name__ == "__main__":
    main()
