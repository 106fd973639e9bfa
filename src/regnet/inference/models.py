"""Find and load a trained model: a shipped name (checksum-verified) or a checkpoint path."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from regnet.config import Config
from regnet.errors import UsageError, fail
from regnet.intensity import guess_modality
from regnet.network.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    resolve_model,
    save_multistage,
    sha256,
    shipped_models,
)


@dataclass
class LoadedModel:
    """A network in eval mode with its config and the isotropic spacing it was trained at.

    A multi-stage model keeps its stages, coarse to fine, in ``stages``; its own network,
    config and spacing are those of the finest stage."""

    network: nn.Module
    config: Config
    spacing_mm: float
    source: str
    intensity_p1_p99: list | None = None  # normalised percentiles of the training images
    stages: list[LoadedModel] = field(default_factory=list)
    run_spacing_mm: float | None = None  # a stage run at another spacing than it trained at
    smooth_vox: float | None = None  # a stage's own sigma on its output (None: --smooth's)
    own: dict = field(default_factory=dict)  # models.json's "own": the model's own options
    presets: dict = field(default_factory=dict)  # models.json's "presets": name -> options

    @property
    def stage_spacing_mm(self) -> float:
        return self.run_spacing_mm or self.spacing_mm

    @property
    def trained_range_mm(self) -> float:
        """The largest displacement component the model was trained to recover (mm)."""
        return max(float(m.config.sampling.classBalanced[-1]) for m in self.stages or [self])


def choose_model(fixed: sitk.Image, moving: sitk.Image) -> tuple[str, str, str | None]:
    """The shipped model for a pair when none is named: ``(name, why, warning or None)``.

    2D images get ``default_2d``. In 3D, intensities decide (:func:`regnet.intensity.
    guess_modality`): two CTs get ``default``, anything else ``default_mr``, whose per-image
    robust normalisation suits any uncalibrated intensities; a pair that is not two CTs or two
    MRs also gets a warning, as RegNet learns from same-modality pairs."""
    index = shipped_models()
    if fixed.GetDimension() == 2:
        return index.get("default_2d"), "2D images", None
    kinds = [guess_modality(sitk.GetArrayViewFromImage(image)) for image in (fixed, moving)]
    ct, mr = index.get("default"), index.get("default_mr") or index.get("default")
    if kinds == ["CT", "CT"]:
        return ct, "both images look like CT (Hounsfield units, air below -500)", None
    if kinds == ["MR", "MR"]:
        return mr, "both images look like MR (non-negative, uncalibrated intensities)", None
    described = [k or "neither CT nor MR" for k in kinds]
    return mr, "its normalisation suits any intensities", (
        f"modality: the fixed image looks like {described[0]}, the moving image like "
        f"{described[1]}; RegNet learns from same-modality CT or MR pairs, so check the result")


def load_model(model: str | Path | None = None, dim: int = 3) -> LoadedModel:
    path, entry = resolve_model(model, dim)
    if entry and sha256(path) != entry["sha256"]:
        raise fail(path, "checksum mismatch: the shipped model file is damaged or replaced")
    payload = load_checkpoint(path)
    if "stages" in payload:
        shipped = {}  # a shipped model that several stages run (at other spacings) loads once
        stages = [_stage(p, f"{path} stage {k}", entry, shipped)
                  for k, p in enumerate(payload["stages"])]
        finest = stages[-1]
        return LoadedModel(finest.network, finest.config, finest.spacing_mm, str(path),
                           finest.intensity_p1_p99, stages, own=dict(entry.get("own", {})),
                           presets=dict(entry.get("presets", {})))
    return _from_payload(payload, str(path), entry)


def _stage(payload: dict, where: str, entry: dict, shipped: dict) -> LoadedModel:
    """One stage of a multi-stage file: its own weights, or a shipped model it refers to
    (loaded once into ``shipped``, by name; stages that share it share its network)."""
    name = payload.get("shipped")
    if name is None:
        return _from_payload(payload, where, entry)
    if name not in shipped_models()["models"]:
        raise fail(where, f"refers to the shipped model {name!r}, which this installation "
                   "lacks")
    if name not in shipped:
        shipped[name] = load_model(name)
    stage = shipped[name]
    if stage.stages:
        raise fail(where, f"refers to {name!r}, itself a multi-stage model")
    return dataclasses.replace(stage, **_stage_settings(payload))


def _stage_settings(payload: dict) -> dict:
    """A stage's own ``run_spacing_mm`` and ``smooth_vox`` (None where it has none)."""
    return {key: None if payload.get(key) is None else float(payload[key])
            for key in ("run_spacing_mm", "smooth_vox")}


def _from_payload(payload: dict, where: str, entry: dict) -> LoadedModel:
    network, config = model_from_checkpoint(payload, where)
    fold_batchnorm(network.eval())
    if config.network.dim == 3:
        # channels-last 3D convolutions: one seed-network pass over a 128x128x80 image in tiles
        # of 40 centres 10.0 -> 8.8 s on 2 CPU cores, the same outputs (benchmarks/README.md)
        network.to(memory_format=torch.channels_last_3d)
    spacing = float(payload.get("spacing_mm", config.synthesis.spacing_mm))
    reference = payload.get("intensity_p1_p99", entry.get("intensity_p1_p99"))
    return LoadedModel(network, config, spacing, where,
                       None if reference is None else [float(v) for v in reference],
                       **_stage_settings(payload), own=dict(entry.get("own", {})),
                       presets=dict(entry.get("presets", {})))


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """Fold every batch normalisation that follows a convolution into that convolution's
    weights and bias (in place, for inference: eval mode's running statistics are constants).
    The same outputs to float rounding, without the normalisation's pass over every feature map
    (a tenth of a seed-network pass on 2 CPU cores; benchmarks/README.md)."""
    for module in network.modules():
        if isinstance(module, nn.Sequential):
            for k in range(len(module) - 1):
                conv, norm = module[k], module[k + 1]
                if (isinstance(conv, nn.Conv2d | nn.Conv3d)
                        and isinstance(norm, nn.BatchNorm2d | nn.BatchNorm3d)):
                    module[k] = fuse_conv_bn_eval(conv, norm)
                    module[k + 1] = nn.Identity()
    return network


def pack_stages(stages, out) -> Path:
    """Write one multi-stage model file from stages, coarse to fine: checkpoint paths (their
    weights are copied in) or shipped names (referred to), each optionally ``@SPACING`` to run
    it at another spacing (mm) and ``:smooth=SIGMA`` to smooth its output by its own Gaussian
    sigma (voxels), e.g. ``ct_lung_2mm@8`` or ``stage.pt:smooth=4``."""
    paths, spacings, sigmas, names = [], [], [], []
    for item in map(str, stages):
        rest, _, sigma = item.partition(":smooth=")
        name, _, spacing = rest.partition("@")
        try:
            spacings.append(float(spacing) if spacing else None)
            sigmas.append(float(sigma) if sigma else None)
        except ValueError:
            raise UsageError(f"--pack {item!r}: expected MODEL[@SPACING_MM][:smooth=SIGMA_VOX]"
                             ) from None
        path, entry = resolve_model(name)
        paths.append(path)
        names.append(name if entry else None)  # a shipped model: referred to, not copied
    return save_multistage(out, paths, spacings, names, sigmas)


def shipped_model_lines() -> list[str]:
    """One line per shipped model: name, modality, anatomy, spacing, validation figure."""
    index = shipped_models()
    defaults = {index.get(key): key for key in ("default", "default_mr", "default_2d")}
    lines = []
    for name, entry in sorted(index["models"].items()):
        tag = f" [{defaults[name]}]" if name in defaults else ""
        presets = f"; presets: {', '.join(entry['presets'])}" if entry.get("presets") else ""
        lines.append(f"{name}{tag}: {entry.get('modality', '?')}, {entry.get('anatomy', '?')},"
                     f" {entry.get('spacing', '?')}; {entry.get('validation', 'no figure')}"
                     + presets)
    return lines
