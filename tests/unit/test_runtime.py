"""A started server freezes its start-up heap once and collects the young less often."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from tresen.runtime import YOUNG_THRESHOLD, settle_heap
assert gc.get_freeze_count() == 0
assert gc.get_threshold()[0] < YOUNG_THRESHOLD
settle_heap()
frozen = gc.get_freeze_count()
assert frozen > 1000, frozen
assert gc.get_threshold()[0] == YOUNG_THRESHOLD
# objects that live a little while (a batch in flight) no longer set off a collection
before = gc.get_stats()[0]["collections"]
for _ in range(20):
    batch = [{"item": i} for i in range(2000)]
    del batch
assert gc.get_stats()[0]["collections"] == before
keep = [[i] for i in range(5000)]  # made after the start: stays in the collector's sight
settle_heap()  # once per process: a second call freezes nothing new
assert gc.get_freeze_count() == frozen
"""


def test_settle_heap_freezes_once() -> None:
    # in a process of its own: frozen objects are never freed, a test run should not keep them
    subprocess.run([sys.executable, "-c", PROBE], check=True, timeout=60)
