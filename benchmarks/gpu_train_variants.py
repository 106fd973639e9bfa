"""GPU training-step throughput of the 3D multi-resolution RegNet under precision and memory
layout variants (compute only: random patches already on the device).

    python benchmarks/gpu_train_variants.py [--width 1.0] [--steps 20]

Prints patches/s per variant; the first row (bf16 autocast, batch 128) is what `regnet train`
does on a GPU today.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402

from regnet.network.regnet import RegNet  # noqa: E402


def patches_per_s(width, batch, steps, precision, channels_last) -> float:
    dev = torch.device("cuda")
    net = RegNet(3, True, width).to(dev)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters())
    full = torch.randn(batch, 2, 29, 29, 29, device=dev).to(memory_format=fmt)
    low = torch.randn(batch, 2, 27, 27, 27, device=dev).to(memory_format=fmt)
    target = torch.randn(batch, 3, device=dev)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    cast = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16"
            else nullcontext())
    for i in range(steps + 5):
        if i == 5:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with cast:
            pred = net(full, low)
        loss = torch.nn.functional.huber_loss(pred.float().flatten(1), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    print(header())
    print(f"\n| precision | layout | batch | patches/s (width {args.width}) |\n|---|---|---|---|")
    for precision, channels_last, batch in [("bf16", False, 128), ("bf16", True, 128),
                                            ("tf32", False, 128), ("fp32", False, 128),
                                            ("bf16", False, 512), ("bf16", True, 512),
                                            ("tf32", False, 512)]:
        rate = patches_per_s(args.width, batch, args.steps, precision, channels_last)
        print(f"| {precision} | {'channels-last' if channels_last else 'NCDHW'} | {batch} | "
              f"{rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
