"""Checkpoints: written atomically, loaded with ``weights_only=True``, rebuilt from their config.

A checkpoint is a dict with ``format``, ``config`` (plain values), ``model`` (state dict),
``step`` and, for training checkpoints, ``optimizer``, ``rng`` and ``best``. A multi-stage model
file holds ``stages`` instead: one such dict per stage (weights and config only), coarse to fine,
or for a shipped model a reference ``{"shipped": name, "spacing_mm": ...}`` (its weights are not
copied; it is loaded, checksum-verified, from the installation).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from regnet.config import Config, config_from_dict
from regnet.errors import RegNetError, UsageError, bad_setting, fail
from regnet.io.atomic import atomic_path, sha256  # noqa: F401 (sha256: this module's API too)
from regnet.network import build_network

FORMAT = "regnet-checkpoint-v1"
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
# {"default": 3D CT name, "default_mr": 3D MR name, "default_2d": 2D name,
#  "models": {name: {file, sha256, modality, anatomy, spacing, validation[, flips]}}}
INDEX = MODELS_DIR / "models.json"


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    """Load safely; a missing, corrupt or foreign file raises a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise fail(path, f"corrupt or unsafe checkpoint ({exc.__class__.__name__})") from exc
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(fmt, str) and fmt.startswith("regnet-checkpoint-v") and fmt != FORMAT:
        raise fail(path, f"checkpoint format {fmt!r} is not {FORMAT!r}: it was written by "
                   "another (newer) RegNet version; upgrade regnet-dir to read it")
    if fmt != FORMAT:
        raise fail(path, f"not a RegNet checkpoint (no format '{FORMAT}')")
    stages = payload.get("stages", [payload])
    if not isinstance(stages, list) or not stages or not all(
            isinstance(p, dict) and (isinstance(p.get("model"), dict)
                                     and isinstance(p.get("config"), dict)
                                     or "stages" in payload and isinstance(p.get("shipped"), str))
            for p in stages):
        raise fail(path, "checkpoint lacks its model weights or config")
    spacings = [stage_spacing(p) for p in stages]
    if "stages" in payload and spacings != sorted(spacings, reverse=True):
        raise fail(path, f"stages must run coarse to fine; their spacings are {spacings} mm")
    return payload


def stage_spacing(payload: dict) -> float:
    """The spacing (mm) a stage runs at: ``run_spacing_mm``, else the one it trained at."""
    return float(payload.get("run_spacing_mm", payload.get("spacing_mm", 0)))


STAGE_KEYS = ("config", "model", "spacing_mm", "intensity_p1_p99", "val_cases", "step")


def save_multistage(path: str | Path, checkpoints, run_spacings_mm=None,
                    shipped_names=None, smooth_vox=None) -> Path:
    """One model file of the given stage checkpoints (coarse to fine; weights and config).
    ``run_spacings_mm[k]``: run stage k at this spacing instead of the one it trained at (its
    prediction is scaled by the ratio, as ``regnet register --stages`` does); None keeps it.
    ``shipped_names[k]``: stage k is that shipped model, stored as a reference, not copied.
    ``smooth_vox[k]``: the Gaussian sigma (voxels) on stage k's output in place of
    ``regnet register``'s ``--smooth``; None leaves it to that option."""
    none = [None] * len(checkpoints)
    stages = []
    for checkpoint, run_spacing, shipped, sigma in zip(
            checkpoints, run_spacings_mm or none, shipped_names or none, smooth_vox or none,
            strict=True):
        payload = load_checkpoint(checkpoint)
        if "stages" in payload:
            raise fail(checkpoint, "is already a multi-stage model; give single stages")
        stage = {k: payload[k] for k in STAGE_KEYS if k in payload}
        if shipped is not None:
            stage = {"shipped": shipped, "spacing_mm": payload.get("spacing_mm", 0.0)}
        if run_spacing is not None:
            stage["run_spacing_mm"] = float(run_spacing)
        if sigma is not None:
            stage["smooth_vox"] = float(sigma)
        stages.append(stage)
    spacings = [stage_spacing(p) for p in stages]
    if spacings != sorted(spacings, reverse=True):
        raise RegNetError(f"stages must be given coarse to fine (a refinement stage may repeat "
                          f"a spacing); their spacings are {spacings} mm")
    return save_checkpoint(path, {"stages": stages})


def model_from_checkpoint(payload: dict, where="checkpoint") -> tuple[nn.Module, Config]:
    """Rebuild the network from the stored config and load its weights (strictly)."""
    try:
        config = config_from_dict(payload.get("config"), where)
        model = build_network(config.network)
    except RegNetError as exc:  # a damaged config inside a file is bad data, not bad usage
        raise RegNetError(str(exc)) from exc
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise fail(where, f"weights do not match the stored config ({first})") from exc
    return model, config


def shipped_models() -> dict:
    if not INDEX.is_file():
        return {"default": None, "models": {}}
    return json.loads(INDEX.read_text(encoding="utf-8"))


def default_key(dim: int) -> str:
    return "default_2d" if dim == 2 else "default"


def resolve_model(model: str | Path | None, dim: int = 3) -> tuple[Path, dict]:
    """Path of a model and, for a shipped one, its index entry (``sha256``, ...).
    ``None``: the shipped default for ``dim``-dimensional images."""
    index = shipped_models()
    if model is None:
        model = index.get(default_key(dim))
        if model is None:
            raise UsageError(f"no default {dim}D model is shipped in this installation; "
                              "pass --model NAME|PATH (a checkpoint from `regnet train`)")
    entry = index["models"].get(str(model))
    if entry is not None:
        return MODELS_DIR / entry["file"], entry
    path = Path(model)
    if path.is_file():
        return path, {}
    raise bad_setting(model, f"is neither a checkpoint file nor a shipped model "
                      f"(shipped: {sorted(index['models'])})")
