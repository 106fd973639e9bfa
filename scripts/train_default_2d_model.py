"""Rebuild the shipped 2D default model `mr_brain_2d` from ../shared/data/brain-2d (resumable).

    python scripts/train_default_2d_model.py [--data ../shared/data/brain-2d]
        [--work /tmp/regnet-default-2d] [--workers 2] [--no-ship]

The recipe (configs/recipes.yaml, ``mr_brain_2d``), by step counts: pairs from the six slices,
checked by sha256 (``configs/default_brain_2d.yaml``, generation seed 0), 3,000 steps with a
cosine decay over 3,000 (training seed 0), then the same run resumed to 9,000 steps (the
cosine restarts at 75% of the learning rate and decays to 0 at 9,000). r85slice (another
subject) validates. The best checkpoint is shipped as ``mr_brain_2d`` (the default for 2D
images) unless ``--no-ship``; the validation table is printed either way. A rerun resumes
where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recipe import recipe_config, recipe_scans, recipe_steps  # noqa: E402
from train_default_model import ROOT, ship, validation_table  # noqa: E402

from regnet.network.checkpoint import load_checkpoint  # noqa: E402
from regnet.synthesis.generate import generate  # noqa: E402
from regnet.training.trainer import train  # noqa: E402

SEED = 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brain-2d"))
    parser.add_argument("--work", default="/tmp/regnet-default-2d")
    parser.add_argument("--workers", type=int, default=2, help="processes for generation")
    parser.add_argument("--no-ship", action="store_true",
                        help="print the validation table, leave the shipped model alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    config = recipe_config("mr_brain_2d", "mr_brain_2d")
    images = recipe_scans("mr_brain_2d", Path(args.data).parent)
    generate(images, work / "pairs", config, seed=SEED, workers=args.workers)
    for steps in recipe_steps("mr_brain_2d", "mr_brain_2d"):  # the run, then resumed
        last = work / "run" / "last.pt"
        if last.exists() and load_checkpoint(last)["step"] >= steps:
            continue
        summary = train([work / "pairs"], work / "run", config, steps=steps,
                        resume=last.exists(), device="cpu", seed=SEED)
        print(json.dumps(summary, indent=1))
    if args.no_ship:
        print(validation_table(work, load_checkpoint(work / "run" / "best.pt"), "cpu"))
    else:
        print(ship(work, name="mr_brain_2d", default_key="default_2d")[1])


if __name__ == "__main__":
    main()
