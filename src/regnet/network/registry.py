"""Architectures by name, so that later networks slot in beside the seed's."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from regnet.config import NetworkConfig
from regnet.errors import UsageError
from regnet.network.corrnet import CorrNet
from regnet.network.regnet import RegNet
from regnet.network.unet import UNet

_REGISTRY: dict[str, Callable[[NetworkConfig], nn.Module]] = {
    "regnet_multi": lambda c: RegNet(dim=c.dim, multi=True, width=c.width),
    "regnet_single": lambda c: RegNet(dim=c.dim, multi=False, width=c.width),
    "unet": lambda c: UNet(dim=c.dim, width=c.width, norm=c.norm),
    "corrnet": lambda c: CorrNet(dim=c.dim, width=c.width, norm=c.norm, radius=c.radius,
                                 fine_radius=c.fine_radius, full_width=c.full_width,
                                 full_radius=c.full_radius,
                                 full_match_width=c.full_match_width),
}
DENSE = {"unet", "corrnet"}  # predict a whole field (trained on crops, not centre voxels)


def dense_crop(config: NetworkConfig) -> int | None:
    """The crop in which validation during training predicts an image larger than a dense
    network's crop (:func:`regnet.network.unet.predict_whole`): its training crop where its
    normalisation takes statistics over the input (instance, group), so that it sees the
    extent it learned on; None (one pass) for any other network. ``regnet register`` predicts
    in one pass: mirrored passes (``--flips``) gain what the crops gain, for less
    (docs/training.md)."""
    return config.crop if config.name in DENSE and config.norm in ("instance", "group") else None


def register_network(name: str, builder: Callable[[NetworkConfig], nn.Module]) -> None:
    _REGISTRY[name] = builder


def network_names() -> list[str]:
    return sorted(_REGISTRY)


def build_network(config: NetworkConfig) -> nn.Module:
    if config.name not in _REGISTRY:
        raise UsageError(f"unknown network {config.name!r}; known: {network_names()}")
    if config.dim not in (2, 3):
        raise UsageError(f"network dim must be 2 or 3, got {config.dim}")
    return _REGISTRY[config.name](config)
