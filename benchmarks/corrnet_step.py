"""The cost-volume network's cost: seconds per training step (forward, backward, Adam) of its
levels, with the cost volume's hand-written backward and with autograd through one slice per
offset; and seconds per inference pass over a whole grid, with the cost volume's block
matrix products and with one product per offset.

    python benchmarks/corrnet_step.py [--batch 4] [--crop 64] [--steps 3] [--norm instance]
        [--grid 80 128 128] [--passes 3]

Random inputs; bf16 autocast where the CPU computes it natively, as ``regnet train`` and
``regnet register`` do. The default grid is a 256x256x160 image at 2 mm.
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

# (fine_radius, full_width, full_radius, full_match_width)
LEVELS = {"coarse cost volume": (0, 0, 0, 0), "+ fine cost volume": (2, 0, 0, 0),
          "+ full-resolution refinement": (2, 16, 0, 0),
          "+ full-resolution cost volume": (2, 16, 1, 0),
          "+ full-resolution cost volume on 4 channels": (2, 16, 1, 4)}


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


def seconds_per_pass(net, grid: list[int], passes: int) -> float:
    """The fastest of ``passes`` forward passes over one random pair on ``grid`` (z, y, x)."""
    pair = torch.randn(1, 2, *grid)
    dtype = inference_dtype(torch.device("cpu"), "auto")
    seconds = []
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        for _ in range(passes + 1):
            start = time.perf_counter()
            net.dense(pair)
            seconds.append(time.perf_counter() - start)
    return min(seconds[1:])


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
    parser.add_argument("--grid", type=int, nargs=3, default=[80, 128, 128],
                        help="inference grid (z, y, x), multiples of 16")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    print(header())
    print(f"# batch {args.batch} crops of {args.crop}^3, norm {args.norm}, "
          f"{args.steps} timed steps after one\n")
    print("| levels | autograd through slices (s/step) | hand-written backward (s/step) "
          "| ratio |")
    print("|---|---|---|---|")
    for name, (fine_radius, full_width, full_radius, match) in LEVELS.items():
        net = corrnet.CorrNet(norm=args.norm, fine_radius=fine_radius, full_width=full_width,
                              full_radius=full_radius, full_match_width=match)
        with mock.patch.object(corrnet.CostVolume, "apply", sliced_cost_volume):
            sliced = seconds_per_step(net, args.batch, args.crop, args.steps)
        ours = seconds_per_step(net, args.batch, args.crop, args.steps)
        print(f"| {name} | {sliced:.2f} | {ours:.2f} | {sliced / ours:.1f}x |", flush=True)
    grid = "x".join(map(str, args.grid[::-1]))
    print(f"\n# one inference pass over {grid} voxels (x, y, z), the fastest of "
          f"{args.passes} after one\n")
    print("| levels | one product per offset (s/pass) | block products (s/pass) | ratio |")
    print("|---|---|---|---|")
    for name, (fine_radius, full_width, full_radius, match) in LEVELS.items():
        net = corrnet.CorrNet(norm=args.norm, fine_radius=fine_radius, full_width=full_width,
                              full_radius=full_radius, full_match_width=match)
        net.eval()
        with mock.patch.object(corrnet.CostVolume, "apply", sliced_cost_volume):
            sliced = seconds_per_pass(net, args.grid, args.passes)
        ours = seconds_per_pass(net, args.grid, args.passes)
        print(f"| {name} | {sliced:.2f} | {ours:.2f} | {sliced / ours:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
