"""Training throughput: patches per second (compute only and end to end), data-wait share,
FLOPs per patch and the bound they imply.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--batch 50] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402

from regnet.config import config_from_dict  # noqa: E402
from regnet.network.regnet import RegNet  # noqa: E402
from regnet.synthesis.generate import generate  # noqa: E402
from regnet.training.trainer import train  # noqa: E402


def flops_per_patch(net, dim):
    full = torch.zeros((2, 2) + (29,) * dim)
    low = torch.zeros((2, 2) + (27,) * dim)
    counter = FlopCounterMode(display=False)
    with counter:
        net(full, low).sum().backward()
    return counter.get_total_flops() / 2


def matmul_gflops(device):
    a = torch.randn(2048, 2048, device=device)
    for _ in range(2):
        a @ a
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 10 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def compute_only(net, batch, steps, device):
    opt = torch.optim.Adam(net.parameters())
    full = torch.randn(batch, 2, 29, 29, 29, device=device)
    low = torch.randn(batch, 2, 27, 27, 27, device=device)
    target = torch.randn(batch, 3, device=device)
    for i in range(steps + 2):
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = torch.nn.functional.huber_loss(net(full, low).flatten(1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def end_to_end(batch, steps, device, width, folder):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        image = sitk.GetImageFromArray(rng.normal(0, 300, (96, 100, 104)).astype(np.float32))
        paths.append(str(folder / f"case{i}.mha"))
        sitk.WriteImage(image, paths[-1])
    synth = {"Border": 20, "sigmaB": [10, 8, 6], "DistanceDeform": 20, "MaxDeform": [6, 5, 5]}
    config = config_from_dict({
        "synthesis": synth, "sampling": {"K": 30, "samplesPerImage": 1000,
                                         "valSamplesPerImage": 30},
        "network": {"width": width},
        "training": {"batch_size": batch, "val_every": 10**6, "checkpoint_every": 10**6,
                     "val_cases": ["case1"]}})
    generate(paths, folder / "pairs", config)
    summary = train([folder / "pairs"], folder / "run", config, steps=steps, device=device)
    return steps * batch / summary["seconds"], summary["data_wait_share"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.5])
    args = parser.parse_args()
    device = torch.device(args.device)
    print(header())
    peak = matmul_gflops(device)
    print(f"# fp32 matmul: {peak:.0f} GFLOP/s on {device}\n")
    print("| width | params | GFLOP/patch (fwd+bwd) | bound (patch/s) | compute (patch/s) "
          "| % of bound | end to end (patch/s) | data wait |")
    print("|---|---|---|---|---|---|---|---|")
    for width in args.widths:
        net = RegNet(width=width).to(device)
        flops = flops_per_patch(net, 3)
        rate = compute_only(net, args.batch, args.steps, device)
        with tempfile.TemporaryDirectory() as folder:
            e2e, wait = end_to_end(args.batch, args.steps, args.device, width, Path(folder))
        params = sum(p.numel() for p in net.parameters())
        bound = peak * 1e9 / flops
        print(f"| {width} | {params:,} | {flops / 1e9:.2f} | {bound:.0f} | {rate:.1f} | "
              f"{100 * rate / bound:.0f}% | {e2e:.1f} | {100 * wait:.0f}% |")


if __name__ == "__main__":
    main()
