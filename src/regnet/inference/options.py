"""The options of ``regnet register``, one object from the command line down to the stages.

The constants here are the choices the command line offers; nothing in this module needs
torch, so ``regnet --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from regnet.errors import UsageError

SMOOTH_VOX = 2.0  # Gaussian sigma (voxels of each stage's grid) on the network's output
# centres per tile side of the seed network's dense prediction: each tile recomputes its halo,
# so larger tiles waste less (80 is one tile for the 2 mm grid of a 256x256x160 image at 1 mm);
# TILE_LARGE where the memory allows it (regnet.inference.register.pick_tile): one tile for
# that image's 1.25 and 1.5 mm grids, 10-20 % faster passes there, 0.8 GB more at the peak
TILE, TILE_LARGE = 80, 112
PHASES = ("all", "one", "sparse")  # where the seed network predicts (inference/dense.py)
FLIPS = (1, 2, 4, 8)  # mirrored passes averaged (inference/dense.py: mirror_sets)
PREALIGN = ("none", "rigid", "affine")
CHAINS = ("auto", "always")
DVF_FORMATS = ("nii", "nii.gz", "mha")  # "nii": 10x faster to write than nii.gz
PRECISIONS = ("auto", "fp32", "bf16")  # regnet.devices.inference_dtype
# named settings a model may store with itself (models.json "presets"): option values, as
# ANTs' SyNQuick is a named, faster setting of SyN
PRESETS = ("fast", "accurate")
# the option values a model's own setting ("own") or a preset may give, with their defaults
PRESET_DEFAULTS = {"flips": 1, "flips_min_mm": 0.0, "drop_stages": ()}
PRESET_FIELDS = tuple(PRESET_DEFAULTS)


@dataclass(frozen=True)
class RegisterOptions:
    """How ``regnet register`` runs (see ``regnet register --help``).

    stages: isotropic spacings (mm) of coarse-to-fine stages; None: the model's own.
    prealign_kind: a global ``PREALIGN`` transform first. guard: drop stages that lower the
    images' similarity. smooth_vox: Gaussian sigma on each stage's output, 0 for the seed's raw
    prediction. unfold_field: smooth a composed field, and locally wherever it folds.
    chain: ``CHAINS``. phases: ``PHASES``. flips: mirrored passes averaged at the fine stages
    (None: the model's own); flips_min_mm: only at stages of at least this spacing (None: the
    model's own, else every fine stage). tile: centres per tile side (None: ``TILE_LARGE``
    where the memory allows, else ``TILE``). max_memory_gb: refuse larger jobs
    (None: the memory available). series: DICOM series UIDs to read. precision: the
    network's arithmetic, ``PRECISIONS`` (:func:`regnet.devices.inference_dtype`).
    preset: one of ``PRESETS`` that the model stores (None: the model's defaults); it sets
    ``PRESET_FIELDS`` that are not given. drop_stages: indices of a multi-stage model's own
    stages (coarse to fine, from 0) left out."""

    stages: tuple[float, ...] | None = None
    prealign_kind: str = "none"
    guard: bool = True
    smooth_vox: float = SMOOTH_VOX
    unfold_field: bool = True
    chain: str = "auto"
    phases: str = "one"
    flips: int | None = None
    flips_min_mm: float | None = None
    tile: int | None = None
    max_memory_gb: float | None = None
    series: tuple[str, ...] | None = None
    precision: str = "auto"
    preset: str | None = None
    drop_stages: tuple[int, ...] | None = None

    def checked(self, dim: int, own: dict | None = None,
                presets: dict | None = None) -> RegisterOptions:
        """These options for ``dim``-D images. Each of ``PRESET_FIELDS`` left at None takes
        the ``preset``'s value (from the model's ``presets``), else the model's ``own``
        (models.json's "own"), else ``PRESET_DEFAULTS``; a choice outside the constants
        raises a :class:`UsageError`."""
        stored = {}
        if self.preset is not None:
            stored = (presets or {}).get(self.preset)
            if self.preset not in PRESETS or stored is None:
                raise UsageError(f"--preset {self.preset}: this model offers "
                                 f"{sorted(presets or {}) or 'no presets'}")
        for where, values in (("--preset " + str(self.preset), stored),
                              ("the model's own setting", own or {})):
            unknown = set(values) - set(PRESET_FIELDS)
            if unknown:
                raise UsageError(f"{where} sets {sorted(unknown)}; it may set {PRESET_FIELDS}")
        resolved = {k: getattr(self, k) if getattr(self, k) is not None
                    else next((v[k] for v in (stored, own or {}) if k in v), default)
                    for k, default in PRESET_DEFAULTS.items()}
        flips = int(resolved["flips"])
        for name, value, allowed in (("--chain", self.chain, CHAINS),
                                     ("--phases", self.phases, PHASES),
                                     ("--prealign", self.prealign_kind, PREALIGN),
                                     ("--precision", self.precision, PRECISIONS),
                                     ("--flips", flips, FLIPS[:dim + 1])):
            if value not in allowed:
                raise UsageError(f"{name} {value}: choose one of {allowed}"
                                 + (f" for {dim}D images" if name == "--flips" else ""))
        if self.stages is not None and (not self.stages or min(self.stages) <= 0):
            raise UsageError(f"--stages {list(self.stages)}: give positive spacings in mm, "
                             "e.g. 8 4 2")
        stages = None if self.stages is None else tuple(float(s) for s in self.stages)
        return dataclasses.replace(self, flips=flips, stages=stages,
                                   flips_min_mm=float(resolved["flips_min_mm"]),
                                   drop_stages=tuple(int(k) for k in resolved["drop_stages"]))


def register_options(options: RegisterOptions | None = None, **values) -> RegisterOptions:
    """``options`` (default: the defaults) with the fields named in ``values`` replaced."""
    return dataclasses.replace(options or RegisterOptions(), **values)
