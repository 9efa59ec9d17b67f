"""A started server freezes its start-up heap once (tresen.runtime)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from tresen.runtime import settle_heap
assert gc.get_freeze_count() == 0
settle_heap()
frozen = gc.get_freeze_count()
assert frozen > 1000, frozen
keep = [[i] for i in range(5000)]  # made after the start: stays in the collector's sight
settle_heap()  # once per process: a second call freezes nothing new
assert gc.get_freeze_count() == frozen
"""


def test_settle_heap_freezes_once() -> None:
    # in a process of its own: frozen objects are never freed, a test run should not keep them
    subprocess.run([sys.executable, "-c", PROBE], check=True, timeout=60)
