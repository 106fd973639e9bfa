"""The defaults' presets (and candidate settings) on validation scans: accuracy against time.

    python benchmarks/presets.py [--data ../shared/data] [--quick] [--modality CT MR]
        [--try '{"drop_stages": [8], "flips": 1}' ...] [--candidates chain.pt ...]

Cases: the seed's low / medium / high fields at 2 mm on each default's validation scan, as
``benchmarks/precision.py`` makes them (never a held-out scan). Rows: the model's own setting,
each preset it stores (``models.json``), each ``--try`` (RegisterOptions fields as JSON), and
each ``--candidates`` model file (say, a chain packed with a new stage) with its own setting.
Prints the mean EPE over the body and the seconds of each registration, then per setting the
mean over the cases.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402
from modalities import body_mask, seed_cases  # noqa: E402
from precision import VALIDATION  # noqa: E402

from regnet.inference.models import load_model  # noqa: E402
from regnet.inference.register import register  # noqa: E402
from regnet.network.checkpoint import shipped_models  # noqa: E402

DEFAULTS = {"CT": "default", "MR": "default_mr"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).parents[2] / "shared" / "data"))
    parser.add_argument("--quick", action="store_true", help="the low field only")
    parser.add_argument("--modality", nargs="+", default=["CT", "MR"], choices=list(VALIDATION))
    parser.add_argument("--try", dest="tries", nargs="*", default=[], type=json.loads,
                        help="candidate settings: RegisterOptions fields as JSON objects")
    parser.add_argument("--candidates", nargs="*", default=[],
                        help="candidate model files, for every modality given")
    args = parser.parse_args()
    print(header())
    print("| case | setting | EPE mean (mm) | seconds |\n|---|---|---|---|")
    means = {}
    for modality in args.modality:
        name = shipped_models()[DEFAULTS[modality]]
        model = load_model(name)
        settings = [("own", {})] + [(f"preset {p}", {"preset": p}) for p in model.presets] + [
            (json.dumps(t), t) for t in args.tries] + [
            (Path(c).name, {"model": load_model(c)}) for c in args.candidates]
        for field, fixed, moving, truth in seed_cases(Path(args.data) / VALIDATION[modality],
                                                      args.quick):
            body = body_mask(sitk.GetArrayFromImage(fixed), modality)
            for label, values in settings:
                values = {"model": model, **values}
                t0 = time.perf_counter()
                dvf = register(fixed, moving, **values).dvf_mm
                seconds = time.perf_counter() - t0
                epe = float(np.linalg.norm(dvf - truth, axis=-1)[body].mean())
                means.setdefault((modality, name, label), []).append((epe, seconds))
                print(f"| {modality} {field} | {name} {label} | {epe:.3f} | {seconds:.1f} |",
                      flush=True)
    print("\n| model | setting | mean EPE (mm) | mean seconds |\n|---|---|---|---|")
    for (_, name, label), rows in means.items():
        epe, seconds = np.mean(rows, axis=0)
        print(f"| {name} | {label} | {epe:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
