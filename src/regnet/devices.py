"""Device choice shared by training and inference."""

from __future__ import annotations

import torch

from regnet.errors import RegNetError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RegNetError(f"--device {name}: no CUDA GPU is available (torch "
                          f"{torch.__version__}); use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise RegNetError(f"--device {name}: not a device (use auto, cpu or cuda)") from exc
