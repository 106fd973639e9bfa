"""A cost-volume CT stage of ``scripts/train_dense.py`` on one GPU, in one script of at most
ten minutes: pairs, training, validation, and the stage's prediction time at 256x256x160 mm.

    python scripts/gpu_dense.py pack [--stage 2mm|4mm-corr] [--data ../shared/data]
        [--out gpu_scans]
    python scripts/gpu_dense.py run [--stage 2mm|4mm-corr] [--scans gpu_scans]
        [--work /tmp/regnet-gpu-dense] [--steps N] [--batch-size 32] [--device cuda]
        [--workers 16] [--fine-radius K] [--full-width C] [--norm instance] [--width W]
        [--max-minutes M] [--val-every N] [--lr LR]

``pack`` runs where the data is: the CTs that ``scripts/train_dense.py --stage STAGE`` trains
on (for ``2mm``, their central crops), resampled to the stage's spacing (linear, int16), a few
MB in all, so that the folder can travel to a machine without the data. ``run`` runs on the
GPU machine: ``regnet generate`` (seed 0) on those scans, ``regnet train`` (seed 0; the config
with ``--batch-size`` crops a step and its steps scaled down to see as many crops, unless
``--steps``; ``--max-minutes`` ends it earlier, its cosine schedule fitted to the time as
``regnet train --max-minutes`` does; ``--fine-radius`` and ``--full-width`` add those levels
from the start, which on a CPU are grown one run at a time; ``--norm``, ``--width`` and
``--lr`` change the network and its learning rate), then prints the run's validation curve
(EPE over the whole validation pairs against the identity's, every ``--val-every`` steps or
six times a run; also as ``WORK/curve.png``) and the time of the trained stage's prediction,
as ``regnet register`` makes it, over a 64x64x40 and a 128x128x80 grid (256x256x160 mm at 4
and at 2 mm): median of 10, bf16. Try it on a CPU first with ``--device cpu --steps 4``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from recipe import ROOT  # noqa: E402
from train_dense import SEED_2MM, STAGES, plot_curve, stage_scans  # noqa: E402

from regnet.inference.models import load_model  # noqa: E402
from regnet.io.images import resample_isotropic, write_image  # noqa: E402
from regnet.network.checkpoint import load_checkpoint  # noqa: E402
from regnet.network.registry import dense_crop  # noqa: E402
from regnet.network.unet import predict_whole  # noqa: E402
from regnet.synthesis.generate import case_name  # noqa: E402

REGNET = [sys.executable, "-m", "regnet.cli"]


def pack(stage: str, data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    spacing_mm = yaml.safe_load(STAGES[stage].read_text())["synthesis"]["spacing_mm"]
    for scan in stage_scans(stage, data, out / "crops"):
        image = resample_isotropic(sitk.ReadImage(scan), spacing_mm)
        write_image(sitk.Cast(sitk.Round(image), sitk.sitkInt16),
                    out / f"{case_name(scan)}.nii.gz")
    shutil.rmtree(out / "crops", ignore_errors=True)
    packed = list(out.glob("*.nii.gz"))
    size_mb = sum(f.stat().st_size for f in packed) / 2**20
    print(f"pack: {len(packed)} scans at {spacing_mm} mm in {out} ({size_mb:.1f} MB)")


def forward_seconds(model, shape: tuple[int, ...], device: torch.device) -> float:
    """Median seconds of 10 predictions of the field over a random pair of ``shape`` (z, y,
    x) as a stage of ``regnet register`` makes them (in crops where
    :func:`~regnet.network.registry.dense_crop` says so; from and to host arrays), bf16."""
    moving, fixed = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    crop = dense_crop(model.config.network)
    times = []
    with torch.autocast(device.type, dtype=torch.bfloat16):
        for _ in range(12):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            predict_whole(model.network, moving, fixed, device, crop)
            times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]


def run(args) -> None:
    config_path = STAGES[args.stage]
    work = Path(args.work)
    t0 = time.perf_counter()
    pairs = work / "pairs"
    scans = sorted(str(p) for p in Path(args.scans).glob("*.nii.gz"))
    if not (pairs / "manifest.csv").exists():
        subprocess.run([*REGNET, "generate", "--images", *scans, "--out", str(pairs),
                        "--config", str(config_path), "--seed", "0", "--workers",
                        str(args.workers)], check=True)
    t_pairs = time.perf_counter() - t0
    config = yaml.safe_load(config_path.read_text())
    crops = config["training"]["steps"] * config["training"]["batch_size"]
    steps = args.steps or crops // args.batch_size
    config["training"].update(batch_size=args.batch_size, num_workers=min(args.workers, 8),
                              val_every=args.val_every or max(steps // 6, min(steps, 50)))
    if args.lr:
        config["training"]["lr"] = args.lr
    for key in ("fine_radius", "full_width", "norm", "width"):
        if getattr(args, key) is not None:
            config["network"][key] = getattr(args, key)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    run_dir = work / "run"
    command = [*REGNET, "train", "--data", str(pairs), "--out", str(run_dir), "--config",
               str(work / "config.yaml"), "--seed", "0", "--device", args.device,
               "--steps", str(steps)]
    if args.max_minutes:
        command += ["--max-minutes", str(args.max_minutes)]
    if (run_dir / "last.pt").exists():
        command.append("--resume")
    subprocess.run(command, check=True)
    t_train = time.perf_counter() - t0 - t_pairs
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    curve = {p.step: round(p.value, 3) for p in events.Scalars("val/epe")}
    identity = events.Scalars("val/epe_identity")[-1].value
    device = torch.device(args.device)
    model = load_model(run_dir / "best.pt")
    model.network.to(device)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "steps": steps, "steps_done": load_checkpoint(run_dir / "last.pt")["step"],
              "best_step": load_checkpoint(run_dir / "best.pt")["step"],
              "batch_size": args.batch_size, "seconds_pairs": round(t_pairs),
              "seconds_training": round(t_train), "val_epe_by_step": curve,
              "val_epe_identity": round(identity, 3),
              "forward_s_64x64x40": round(forward_seconds(model, (40, 64, 64), device), 4),
              "forward_s_128x128x80": round(forward_seconds(model, (80, 128, 128), device), 4)}
    print(json.dumps(result, indent=1))
    (work / "result.json").write_text(json.dumps(result, indent=1))
    plot_curve(run_dir, work / "curve.png", SEED_2MM if args.stage == "2mm" else None,
               crops=args.batch_size, crop_vox=config["network"]["crop"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--stage", choices=["2mm", "4mm-corr"], default="2mm")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default="gpu_scans")
    p = sub.add_parser("run")
    p.add_argument("--stage", choices=["2mm", "4mm-corr"], default="2mm")
    p.add_argument("--scans", default="gpu_scans")
    p.add_argument("--work", default="/tmp/regnet-gpu-dense")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-minutes", type=float, help="end training after this long")
    p.add_argument("--val-every", type=int, help="steps between validations")
    p.add_argument("--lr", type=float, help="the learning rate (default: the config's)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--fine-radius", type=int, help="corrnet: the fine cost volume's reach")
    p.add_argument("--full-width", type=int, help="corrnet: the full-resolution refinement")
    p.add_argument("--norm", choices=["batch", "instance", "group", "none"],
                   help="the normalisation layers (default: the config's; instance learned the "
                        "2 mm CT pairs fastest on the CPU)")
    p.add_argument("--width", type=float, help="corrnet: its channels times this (default: "
                   "the config's; at width 1 the 2 mm network fits its training pairs no "
                   "better than its validation pairs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "pack":
        pack(args.stage, Path(args.data), Path(args.out))
    else:
        run(args)


if __name__ == "__main__":
    main()
