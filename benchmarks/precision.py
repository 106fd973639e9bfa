"""bf16 against fp32 inference of the defaults, on validation scans (never the held-out ones).

    python benchmarks/precision.py [--data ../shared/data] [--quick]

Cases: the seed's low / medium / high fields at 2 mm (as ``benchmarks/modalities.py`` makes
them) on the CT default's validation CT (``lung-ct/lung2_image.nrrd``) and the MR default's
validation FLAIR (``mr-various/niivue_flair_brain_skullstripped.nii.gz``). Each is registered
by the default ``regnet register`` chooses, with ``--precision fp32`` and ``bf16``. Prints the
mean EPE over the body (as ``modalities.py`` measures it), the mean and largest difference
between the two fields, and the time of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parent))
from _env import header  # noqa: E402
from modalities import body_mask, seed_cases  # noqa: E402

from regnet.devices import cpu_has_native_bf16  # noqa: E402
from regnet.inference.register import register  # noqa: E402

VALIDATION = {"CT": "lung-ct/lung2_image.nrrd",
              "MR": "mr-various/niivue_flair_brain_skullstripped.nii.gz"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).parents[2] / "shared" / "data"))
    parser.add_argument("--quick", action="store_true", help="the low field only")
    args = parser.parse_args()
    print(header())
    print(f"# native bf16 on this CPU: {cpu_has_native_bf16()}")
    print(f"{'case':<28}{'EPE fp32':>10}{'EPE bf16':>10}{'mean |diff|':>12}{'max |diff|':>11}"
          f"{'s fp32':>8}{'s bf16':>8}")
    costs = []
    for modality, name in VALIDATION.items():
        for field, fixed, moving, truth in seed_cases(Path(args.data) / name, args.quick):
            body = body_mask(sitk.GetArrayFromImage(fixed), modality)
            dvf, seconds, epe = {}, {}, {}
            for precision in ("fp32", "bf16"):
                t0 = time.perf_counter()
                dvf[precision] = register(fixed, moving, precision=precision).dvf_mm
                seconds[precision] = time.perf_counter() - t0
                epe[precision] = float(np.linalg.norm(dvf[precision] - truth, axis=-1)[body]
                                       .mean())
            diff = np.linalg.norm(dvf["fp32"] - dvf["bf16"], axis=-1)[body]
            costs.append(epe["bf16"] - epe["fp32"])
            print(f"{modality + ' ' + field:<28}{epe['fp32']:10.3f}{epe['bf16']:10.3f}"
                  f"{diff.mean():12.4f}{diff.max():11.3f}{seconds['fp32']:8.1f}"
                  f"{seconds['bf16']:8.1f}", flush=True)
    print(f"# bf16's EPE minus fp32's: mean {np.mean(costs):+.4f} mm, largest "
          f"{max(costs):+.4f} mm")


if __name__ == "__main__":
    main()
