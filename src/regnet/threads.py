"""Work split across the CPU's cores in threads, where NumPy or SciPy would use one.

NumPy's array arithmetic and SciPy's ``ndimage`` filters release the GIL but run on one core;
independent pieces of one array (the slabs of a Jacobian, the components of a field) then
share the cores in threads, with no copies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_in_threads(function: Callable, items: Iterable) -> list:
    """``[function(item) for item in items]``, in one thread per core."""
    items = list(items)
    if cores() == 1 or len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(cores(), len(items))) as pool:
        return list(pool.map(function, items))
