"""The cost-volume network's training step: seconds per step (forward, backward, Adam) of
its levels, with the cost volume's hand-written backward and with autograd through one slice
per offset.

    python benchmarks/corrnet_step.py [--batch 4] [--crop 64] [--steps 3] [--norm instance]

Random crops; bf16 autocast where the CPU computes it natively, as ``regnet train`` does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402

from regnet.devices import inference_dtype  # noqa: E402
from regnet.network import corrnet  # noqa: E402

LEVELS = {"coarse cost volume": (0, 0), "+ fine cost volume": (2, 0),
          "+ full-resolution refinement": (2, 16)}


def sliced_cost_volume(fixed, moving, radius):
    """The cost volume as autograd sees one slice of the padded moving features per offset."""
    shape = fixed.shape[2:]
    padded = F.pad(moving, [radius] * (2 * len(shape)))
    costs = []
    for offset in corrnet._offsets(radius, len(shape)).long().tolist():
        window = tuple(slice(radius + o, radius + o + n) for o, n in zip(offset, shape,
                                                                        strict=True))
        costs.append((fixed * padded[(slice(None), slice(None), *window)]).sum(1))
    return torch.stack(costs, 1)


def seconds_per_step(net, batch: int, crop: int, steps: int) -> float:
    torch.manual_seed(0)
    pair = torch.randn(batch, 2, crop, crop, crop)
    target = torch.randn(batch, 3, crop, crop, crop)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    dtype = inference_dtype(torch.device("cpu"), "auto")
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        with autocast:
            field = net.dense(pair)
        loss = F.huber_loss(field.float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--norm", default="instance")
    args = parser.parse_args()
    print(header())
    print(f"# batch {args.batch} crops of {args.crop}^3, norm {args.norm}, "
          f"{args.steps} timed steps after one\n")
    print("| levels | autograd through slices (s/step) | hand-written backward (s/step) "
          "| ratio |")
    print("|---|---|---|---|")
    for name, (fine_radius, full_width) in LEVELS.items():
        net = corrnet.CorrNet(norm=args.norm, fine_radius=fine_radius, full_width=full_width)
        with mock.patch.object(corrnet.CostVolume, "apply", sliced_cost_volume):
            sliced = seconds_per_step(net, args.batch, args.crop, args.steps)
        ours = seconds_per_step(net, args.batch, args.crop, args.steps)
        print(f"| {name} | {sliced:.2f} | {ours:.2f} | {sliced / ours:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
