"""Hardware and version header shared by the benchmark scripts."""

from __future__ import annotations

import datetime
import os
import platform
import resource


def header() -> str:
    import numpy
    import scipy
    import torch

    try:
        import SimpleITK

        sitk_version = SimpleITK.Version.VersionString()
    except ImportError:  # e.g. a GPU machine that runs only the network benchmarks
        sitk_version = "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"# {datetime.date.today()} | {cpu} | {os.cpu_count()} cores | GPU: {gpu}\n"
            f"# CPU flags: {' '.join(cpu_flags()) or 'unknown'} | native bf16 (torch): "
            f"{any(getattr(torch.cpu, c, lambda: False)() for c in BF16_CHECKS)}\n"
            f"# python {platform.python_version()} | torch {torch.__version__} | "
            f"numpy {numpy.__version__} | scipy {scipy.__version__} | "
            f"SimpleITK {sitk_version}")


BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
         "amx_tile")


def cpu_flags() -> list[str]:
    """The vector-arithmetic flags that matter to convolutions, as /proc/cpuinfo lists them."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [flag for flag in FLAGS if flag in flags]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(queue, fn, args):
    import time as _time

    t0 = _time.perf_counter()
    result = fn(*args)
    queue.put((result, _time.perf_counter() - t0, peak_rss_mb()))


def in_fresh_process(fn, *args):
    """Run ``fn(*args)`` in a spawned process: ``(result, wall seconds, peak RSS MB)``, so that
    each method's peak memory is its own."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue, fn, args))
    process.start()
    out = queue.get()
    process.join()
    return out
