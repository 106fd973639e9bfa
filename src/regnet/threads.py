"""Work split across the CPU's cores in threads, where NumPy or SciPy would use one.

NumPy's array arithmetic and SciPy's ``ndimage`` filters release the GIL but run on one core;
independent pieces of one array (the slabs of a Jacobian, the components of a field) then
share the cores in threads, with no copies. The number of threads is torch's
(``torch.get_num_threads()``), the one setting that batch registration's worker processes and
the training loader's workers lower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor


def map_in_threads(function: Callable, items: Iterable) -> list:
    """``[function(item) for item in items]``, in as many threads as torch uses."""
    import torch  # here, not above: `regnet --help` needs no torch

    items = list(items)
    threads = min(torch.get_num_threads(), len(items))
    if threads < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(function, items))
