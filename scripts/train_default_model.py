"""Train the shipped default CT model from ../shared/data/lung-ct (resumable).

    python scripts/train_default_model.py --data ../shared/data/lung-ct --work /tmp/regnet-default
        [--steps N] [--workers W] [--device auto] [--ship] [--export DIR]

The recipe is in configs/recipes.yaml (``ct_lung_2mm``: the two scans, checked by sha256, and
3,354 steps; ``--steps`` changes that). lung1 and the right half of lung2 train; the left half
of lung2 validates.
``--scans DIR`` takes the three scans already resampled to 2 mm (lung1.mha, lung2_right.mha,
lung2_left.mha) instead of ``--data``. ``--ship`` (alone, or after training) copies best.pt
(weights and config only) into src/regnet/models/, updates models.json with its checksum and
prints the validation table; ``--export DIR`` copies the shipped model, the table and the run's
checkpoints there (for a GPU machine whose files come back from one folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
from pathlib import Path

import SimpleITK as sitk
import torch
from recipe import ROOT, recipe_config, recipe_scans, recipe_steps  # scripts/ is on the path

from regnet.devices import pick_device
from regnet.io.images import read_image, resample_isotropic, write_image
from regnet.network.checkpoint import load_checkpoint, save_checkpoint, sha256
from regnet.synthesis.generate import generate
from regnet.training.trainer import train

MODELS = ROOT / "src" / "regnet" / "models"


def prepare_scans(data: Path, folder: Path, spacing_mm: float, ready: Path | None = None
                  ) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    if ready is not None:
        for path in sorted(ready.glob("*.mha")):
            if not (folder / path.name).exists():
                shutil.copy(path, folder / path.name)
        return [str(folder / n) for n in ("lung1.mha", "lung2_right.mha", "lung2_left.mha")]
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


def validation_table(work: Path, state: dict, device: str = "cpu") -> str:
    """Validation endpoint error per magnitude class next to identity, as a markdown table."""
    from regnet.network.checkpoint import model_from_checkpoint
    from regnet.sampling.stream import read_manifests
    from regnet.training.validation import draw_validation_centres, validate

    model, config = model_from_checkpoint(state)
    pairs = [p for p in read_manifests([work / "pairs"], config.sampling.deformMethod)
             if p.case in state["val_cases"]]
    centres = draw_validation_centres(pairs, config.sampling, state["seed"])
    model = model.to(device)
    result = validate(model, pairs, centres, config.sampling, torch.device(device))
    lines = ["| magnitude class (max-norm) | RegNet EPE (mm) | identity EPE (mm) |",
             "|---|---|---|"]
    bounds = [0.0, *config.sampling.classBalanced]
    for c in range(len(bounds) - 1):
        lines.append(f"| [{bounds[c]:g}, {bounds[c + 1]:g}) mm | {result[f'epe_class{c}']:.2f} "
                     f"| {result[f'epe_identity_class{c}']:.2f} |")
    lines.append(f"| all ({result['samples']} patches) | {result['epe']:.2f} | "
                 f"{result['epe_identity']:.2f} |")
    lines.append("")
    lines.append("Mean absolute error per component (mm): " + ", ".join(
        f"{a} {result[f'abs_error_{a}']:.2f}" for a in "xyz" if f"abs_error_{a}" in result))
    return "\n".join(lines)


def ship(work: Path, name: str = "ct_lung_2mm", device: str = "cpu", default_key="default"
         ) -> tuple[Path, str]:
    run = work / "run"
    state = load_checkpoint(run / "best.pt")
    target = MODELS / f"{name}.pt"
    save_checkpoint(target, {k: state[k] for k in ("config", "model", "step", "spacing_mm",
                                                   "val_cases", "best", "seed")})
    table = validation_table(work, state, device)
    print(table)
    index_path = MODELS / "models.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"models": {}}
    index[default_key] = name
    index["models"][name] = {"file": target.name, "sha256": sha256(target)}
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    return target, table


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lung-ct"))
    parser.add_argument("--work", default="/tmp/regnet-default")
    parser.add_argument("--scans", help="folder of the three scans already at 2 mm")
    parser.add_argument("--steps", type=int, default=recipe_steps("ct_lung_2mm", "ct_lung_2mm"))
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for generation and for the patch loader")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ship", action="store_true", help="only ship the best checkpoint")
    parser.add_argument("--export", help="copy the shipped model, table and run here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    device = pick_device(args.device).type
    if not args.ship:
        if not args.scans:
            recipe_scans("ct_lung_2mm", Path(args.data).parent)
        config = recipe_config("ct_lung_2mm", "ct_lung_2mm")
        config = dataclasses.replace(config, training=dataclasses.replace(
            config.training, num_workers=args.workers))
        scans = prepare_scans(Path(args.data), work / "scans", config.synthesis.spacing_mm,
                              Path(args.scans) if args.scans else None)
        generate(scans, work / "pairs", config, seed=0, workers=args.workers)
        resume = (work / "run" / "last.pt").exists()
        summary = train([work / "pairs"], work / "run", config, steps=args.steps,
                        resume=resume, device=device, seed=0)
        summary["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        print(json.dumps(summary, indent=1))
        (work / "run" / "summary.json").write_text(json.dumps(summary, indent=1))
    target, table = ship(work, device=device)
    print(target)
    if args.export:
        export = Path(args.export)
        export.mkdir(parents=True, exist_ok=True)
        (export / "validation.md").write_text(table + "\n")
        for path in (target, MODELS / "models.json", work / "run" / "best.pt",
                     work / "run" / "last.pt", work / "run" / "summary.json",
                     *sorted((work / "run" / "tensorboard").glob("events.*"))[-1:]):
            if path.exists():
                shutil.copy(path, export / path.name)


if __name__ == "__main__":
    main()
