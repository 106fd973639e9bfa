"""Long local fuzzing of the readers, the config loader and the landmark parsers.

    python scripts/fuzz.py --minutes 5 [--target image_reader ...]

Runs each property of ``tests/test_fuzz.py`` again and again (fresh random examples, 200 a
round) for ``--minutes`` per target and prints one line per target: rounds, examples, and the
first failure if any (hypothesis prints the shrunk input). Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["REGNET_FUZZ_EXAMPLES"] = "200"  # examples a round

from tests import test_fuzz  # noqa: E402

TARGETS = {name.removeprefix("test_").removesuffix("_never_raises_anything_else"): getattr(
    test_fuzz, name) for name in dir(test_fuzz) if name.endswith("_never_raises_anything_else")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--target", nargs="+", choices=sorted(TARGETS), default=sorted(TARGETS))
    args = parser.parse_args()
    failed = 0
    for name in args.target:
        run = TARGETS[name]
        t0, rounds = time.perf_counter(), 0
        error = None
        while time.perf_counter() - t0 < 60 * args.minutes:
            try:
                run()
            except Exception as exc:  # the property failed: report it and stop this target
                error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
                break
            rounds += 1
        failed += error is not None
        print(f"{name:<28} {rounds:>5} rounds, {200 * rounds:>7} examples, "
              f"{time.perf_counter() - t0:6.0f} s: {error or 'no failure'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
