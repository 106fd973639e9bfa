"""Does a dense network leave the identity? A short supervised run on generated pairs.

    python benchmarks/dense_learning.py --pairs runs/dense_ct_2mm/pairs --arch unet corrnet
        [--steps 350] [--norm group] [--loss huber] [--pairs-in-memory 60]

Both networks train from the same seed on the same stream: crops of 64 voxels at random
centres of up to ``--pairs-in-memory`` training pairs (the validation cases ``lung2_image`` and
``openkbp_validation_pt209`` left out), flipped and permuted at random, batch 4, Adam at
lr 1e-3, bf16 where the CPU computes it natively. Every 50 steps it prints the mean training
EPE of those steps against the identity's, and the EPE on 16 fixed crops of the validation
cases. The table at the end gives each network's last validation EPE.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402

from regnet.config import NetworkConfig, SamplingConfig  # noqa: E402
from regnet.devices import inference_dtype  # noqa: E402
from regnet.network import build_network  # noqa: E402
from regnet.network.unet import upsample  # noqa: E402
from regnet.sampling.crops import cut_crops  # noqa: E402
from regnet.sampling.stream import load_pair, read_manifests  # noqa: E402

VALIDATION = ("lung2_image", "openkbp_validation_pt209")
CROP, BATCH = 64, 4


def epe(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> float:
    """Mean endpoint error (mm) over the weighted voxels of ``(B, 3, *S)`` fields."""
    return float(((pred - target).norm(dim=1, keepdim=True) * weight).sum() / weight.sum())


def random_centres(pairs, count, rng):
    which = rng.integers(0, len(pairs), count)
    return which, np.array([[rng.integers(0, n) for n in pairs[w].fixed.shape] for w in which])


def run(arch: str, args, train_pairs, val_batch, spacing_mm: float) -> list[tuple]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = build_network(NetworkConfig(name=arch, norm=args.norm))
    if hasattr(net, "voxel_mm"):
        net.voxel_mm.fill_(spacing_mm)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    dtype = inference_dtype(torch.device("cpu"), "auto")
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)
    rows, recent, t0 = [], [], time.perf_counter()
    for step in range(1, args.steps + 1):
        which, centres = random_centres(train_pairs, BATCH, rng)
        flips = rng.random((BATCH, 3)) < 0.5
        perms = np.array([rng.permutation(3) for _ in range(BATCH)])
        batch = cut_crops(train_pairs, which, centres, np.zeros(BATCH), CROP, flips, perms)
        with autocast:
            pred = upsample(net(batch.pair).float(), batch.pair.shape[2:])
        diff = pred - batch.target
        per_voxel = diff ** 2 if args.loss == "mse" else F.huber_loss(
            pred, batch.target, reduction="none", delta=1.0)
        loss = (per_voxel * batch.weight).sum() / (batch.weight.sum() * 3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recent.append((epe(pred.detach(), batch.target, batch.weight),
                       epe(torch.zeros_like(pred), batch.target, batch.weight)))
        if step % 50 == 0:
            net.eval()
            with torch.no_grad(), autocast:
                val = np.mean([epe(upsample(net(val_batch.pair[i:i + BATCH]).float(),
                                            val_batch.pair.shape[2:]),
                                   val_batch.target[i:i + BATCH], val_batch.weight[i:i + BATCH])
                               for i in range(0, len(val_batch.pair), BATCH)])
            net.train()
            train_epe, train_identity = np.mean(recent, axis=0)
            recent = []
            rows.append((step, train_epe / train_identity, val))
            print(f"{arch} step {step}: training EPE / identity {train_epe / train_identity:.3f}"
                  f", validation EPE {val:.3f} mm ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True, help="a folder of `regnet generate`")
    parser.add_argument("--arch", nargs="+", default=["unet", "corrnet"])
    parser.add_argument("--steps", type=int, default=350)
    parser.add_argument("--norm", default="group")
    parser.add_argument("--loss", choices=["huber", "mse"], default="huber")
    parser.add_argument("--pairs-in-memory", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(header())
    sampling = SamplingConfig(normalization="ct")
    pairs = read_manifests([args.pairs], deform_methods=(0, 1, 2))
    val = [p for p in pairs if p.case in VALIDATION]
    rest = [p for p in pairs if p.case not in VALIDATION]
    pick = np.random.default_rng(0).choice(len(rest), min(args.pairs_in_memory, len(rest)),
                                           replace=False)
    train_pairs = [load_pair(rest[i], sampling) for i in pick]
    val_pairs = [load_pair(p, sampling) for p in val]
    which, centres = random_centres(val_pairs, 16, np.random.default_rng(1))
    val_batch = cut_crops(val_pairs, which, centres, np.zeros(16), CROP)
    identity = epe(torch.zeros_like(val_batch.target), val_batch.target, val_batch.weight)
    import SimpleITK as sitk

    spacing_mm = sitk.ReadImage(val[0].fixed).GetSpacing()[0]
    print(f"# {args.pairs}: {len(train_pairs)} training pairs in memory, 16 validation crops "
          f"(identity EPE {identity:.3f} mm), {spacing_mm:g} mm voxels, loss {args.loss}\n")
    results = {arch: run(arch, args, train_pairs, val_batch, spacing_mm) for arch in args.arch}
    print("\n| network | steps | training EPE / identity (last 50 steps) | validation EPE (mm) |")
    print("|---|---|---|---|")
    print(f"| identity | | 1 | {identity:.3f} |")
    for arch, rows in results.items():
        step, ratio, val_epe = rows[-1]
        print(f"| {arch} | {step} | {ratio:.3f} | {val_epe:.3f} |")


if __name__ == "__main__":
    main()
