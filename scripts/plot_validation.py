"""A training run's validation curve as a PNG, beside reference errors.

    python scripts/plot_validation.py RUN OUT.png [--label NAME] [--xlabel TEXT]
        [--reference NAME=MM ...]

RUN is a ``regnet train`` run folder (its ``tensorboard/``). Example, the half-width CT
network against the network it replaces on the same validation patches:

    python scripts/plot_validation.py runs/ct_half_2mm docs/img/ct_half_2mm_curve.png \\
        --label "half width" --xlabel "step (32 patches)" --reference "ct_lung_2mm=0.86"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from regnet.reporting.figures import validation_curve_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument("--label", default="network")
    parser.add_argument("--xlabel", default="step")
    parser.add_argument("--reference", nargs="*", default=[], metavar="NAME=MM")
    args = parser.parse_args()
    references = {}
    for item in args.reference:
        name, _, value = item.rpartition("=")
        references[name] = float(value)
    print(validation_curve_figure(Path(args.run) / "tensorboard", args.out, args.label,
                                  args.xlabel, references))


if __name__ == "__main__":
    main()
