"""RegNet architectures behind a small registry."""

from regnet.network.registry import build_network, network_names

__all__ = ["build_network", "network_names"]
