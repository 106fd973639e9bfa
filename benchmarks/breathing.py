"""Large breathing motion on a chest CT at its own resolution: RegNet's CT default and elastix.

    python benchmarks/breathing.py --ct ../shared/data/lung-ct/lung2_image.nrrd \
        [--amplitudes 10 20 30] [--methods identity regnet elastix] [--regnet-options K=V ...]

The CT is cropped to its body's bounding box, not resampled. Each amplitude makes one
respiratory field (``regnet generate``'s D3: the lung base moves that far inferiorly, the chest
wall 30% of it anteriorly) and its pair. Prints, per method, the mean and p95 EPE inside the
lungs (HU < -400 inside the body, not connected to the air around it), the share of folding
body voxels, the stages RegNet kept, and the wall time. ``--regnet-options`` passes
``RegisterOptions`` fields (``chain=always guard=false``) to compare settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402
from large_motion import folding  # noqa: E402

from regnet.config import SynthesisConfig  # noqa: E402
from regnet.evaluation.elastix import elastix_bspline  # noqa: E402
from regnet.inference.register import register  # noqa: E402
from regnet.io.images import read_image  # noqa: E402
from regnet.synthesis.pairs import make_pair  # noqa: E402


def body_crop(image: sitk.Image) -> sitk.Image:
    """``image`` cropped to the bounding box of its largest component above -500 HU."""
    labels, _ = ndimage.label(sitk.GetArrayViewFromImage(image) > -500)
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    box = ndimage.find_objects((labels == largest).astype(np.uint8))[0]
    lower = [s.start for s in reversed(box)]
    upper = [n - s.stop for s, n in zip(reversed(box), image.GetSize(), strict=True)]
    return sitk.Crop(image, lower, upper)


def lung_mask(array: np.ndarray) -> np.ndarray:
    """Air inside the body: HU < -400, without the components that touch the array's side
    faces (the air around the body; the lungs may reach the first and last slices)."""
    labels, _ = ndimage.label(array < -400)
    faces = np.unique(np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(),
                                      labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    return (labels > 0) & ~np.isin(labels, faces)


def parse_options(items) -> dict:
    values = {}
    for item in items:
        key, _, text = item.partition("=")
        values[key] = {"true": True, "false": False}.get(text.lower(), text)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", required=True)
    parser.add_argument("--amplitudes", nargs="+", type=float, default=[10, 20, 30])
    parser.add_argument("--methods", nargs="+", default=["identity", "regnet", "elastix"])
    parser.add_argument("--regnet-options", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    print(header())
    source = body_crop(read_image(args.ct))
    lungs = lung_mask(sitk.GetArrayFromImage(source))
    body = sitk.GetArrayFromImage(source) > -500
    options = parse_options(args.regnet_options)
    print(f"# {Path(args.ct).name} cropped to {source.GetSize()} voxels of "
          f"{np.round(source.GetSpacing(), 3).tolist()} mm; lungs {lungs.mean():.1%} of them; "
          f"RegNet options {options or 'default'}\n")
    print("| amplitude | method | lung EPE mean | lung EPE p95 | folding % (body / all) | "
          "kept | seconds |")
    print("|---|---|---|---|---|---|---|")
    for k, amplitude in enumerate(args.amplitudes):
        config = SynthesisConfig(RespiratoryMinDeform=amplitude, RespiratoryMaxDeform=amplitude)
        pair = make_pair(source, 3, config, np.random.default_rng([11, k]))
        fixed, truth = pair.fixed, pair.dvf_mm
        for method in args.methods:
            t0, kept = time.perf_counter(), ""
            if method == "identity":
                dvf = np.zeros_like(truth)
            elif method == "regnet":
                result = register(fixed, source, **options)
                dvf = result.dvf_mm
                kept = " ".join(f"{s['spacing_mm']:g}{'' if s['kept'] else '(dropped)'}"
                                for s in result.summary["stages"])
            else:
                dvf, _ = elastix_bspline(fixed, source)
            seconds = time.perf_counter() - t0
            err = np.linalg.norm(dvf - truth, axis=-1)[lungs]
            print(f"| {amplitude:g} mm | {method} | {err.mean():.2f} | "
                  f"{np.percentile(err, 95):.2f} | {folding(dvf, fixed, body)} | {kept} | "
                  f"{seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
