"""Where the seconds of one registration go: named parts, timed and added up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """``with watch("warp"): ...`` adds the block's wall seconds to the part ``"warp"``; a part
    timed twice adds up. ``seconds`` maps part names to seconds, in the order first timed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - t0)

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {part: round(s, 3) for part, s in self.seconds.items()}
