"""Device and precision choice shared by training and inference."""

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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), read at run time:
    there bf16 roughly halves a convolution's time; elsewhere it is emulated and slower."""
    return any(getattr(torch.cpu, check, lambda: False)()
               for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype the network's convolutions run in at inference (None: float32).

    ``fp32``: float32. ``bf16``: bfloat16 anywhere. ``auto``: bfloat16 on a CPU that has it
    natively (:func:`cpu_has_native_bf16`) and on a GPU that supports it, float16 on other
    GPUs, float32 on other CPUs."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
