"""Train the shipped 2D default model from ../shared/data/brain-2d (resumable).

    python scripts/train_default_2d_model.py [--data ../shared/data/brain-2d]
        [--work /tmp/regnet-default-2d] [--steps N] [--minutes M] [--workers 2]

Five axial T1 slices train; r85slice (another subject) is held out for validation. The best
checkpoint is shipped as ``mr_brain_2d``, the default for 2D images, and its validation table
printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_default_model import ROOT, ship  # noqa: E402

from regnet.config import load_config  # noqa: E402
from regnet.synthesis.generate import generate  # noqa: E402
from regnet.training.trainer import train  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brain-2d"))
    parser.add_argument("--work", default="/tmp/regnet-default-2d")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--minutes", type=float, help="training wall-time budget")
    parser.add_argument("--workers", type=int, default=2, help="processes for generation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    config = load_config(ROOT / "configs" / "default_brain_2d.yaml")
    images = [str(p) for p in sorted(Path(args.data).glob("*.jpg"))]
    generate(images, work / "pairs", config, seed=0, workers=args.workers)
    summary = train([work / "pairs"], work / "run", config, steps=args.steps,
                    resume=(work / "run" / "last.pt").exists(), device="cpu",
                    max_minutes=args.minutes)
    print(json.dumps(summary, indent=1))
    print(ship(work, name="mr_brain_2d", default_key="default_2d")[0])


if __name__ == "__main__":
    main()
