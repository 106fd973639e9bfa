"""Checkpoints: written atomically, loaded with ``weights_only=True``, rebuilt from their config.

A checkpoint is a dict with ``format``, ``config`` (plain values), ``model`` (state dict),
``step`` and, for training checkpoints, ``optimizer``, ``rng`` and ``best``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from regnet.config import Config, config_from_dict
from regnet.errors import RegNetError, fail
from regnet.io.atomic import atomic_path
from regnet.network import build_network

FORMAT = "regnet-checkpoint-v1"


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return Path(path)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    if not isinstance(payload.get("model"), dict) or not isinstance(payload.get("config"), dict):
        raise fail(path, "checkpoint lacks its model weights or config")
    return payload


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
