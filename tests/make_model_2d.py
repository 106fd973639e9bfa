"""Recipe for ``tests/data/model_2d.pt``, the small 2D RegNet the registration tests use.

The tests judge registration, not training, so they load this model instead of training one:
a model trained in the test run would make their verdict depend on the CPU's floating-point
path. Rebuild it with ``python -m tests.make_model_2d`` (2,000 steps, seed 0, about 12 minutes
on 2 CPU cores); it trains on ``tests.helpers.make_2d_dataset`` with case5 held out and prints
the held-out patch error against the identity's.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from regnet.network.checkpoint import STAGE_KEYS, load_checkpoint, save_checkpoint
from regnet.training.trainer import train
from tests.helpers import config_2d, make_2d_dataset

MODEL_2D = Path(__file__).resolve().parent / "data" / "model_2d.pt"
STEPS = 2000


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data = make_2d_dataset(Path(tmp), cases=6)
        summary = train([data], Path(tmp) / "run", config_2d(steps=STEPS, val_every=250), seed=0)
        best = load_checkpoint(Path(tmp) / "run" / "best.pt")
        MODEL_2D.parent.mkdir(exist_ok=True)
        save_checkpoint(MODEL_2D, {k: best[k] for k in (*STAGE_KEYS, "best") if k in best})
    val = summary["validation"]
    print(f"{MODEL_2D}: {summary['steps']} steps, held-out case5 patch EPE "
          f"{summary['best_val_epe_mm']:.3f} mm (identity {val['epe_identity']:.3f} mm)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
