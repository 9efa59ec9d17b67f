"""Time, injectable so tests can move it."""

from __future__ import annotations

import time


class Clock:
    """Wall-clock milliseconds since the epoch; tests subclass it and add ``offset``."""

    offset_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def advance(self, seconds: float) -> None:
        self.offset_ms += int(seconds * 1000)
