"""Process settings for a long-running server, applied once it has started.

CPython's cyclic garbage collector walks every tracked object of its oldest generation now and
then. A server that has just started holds a couple of hundred thousand long-lived objects
(modules, the ASGI app, its routes and caches), so such a walk paused the relay's event loop for
up to 140 ms and the gateway's for 60 ms in ``bench/gateway.py``, and every request in flight
waited. Freezing what exists once the server has started moves it out of the collector's sight
(it is never freed, and is not meant to be); later collections see only what came after.

The youngest generation is collected whenever tracked objects made exceed those freed by 700
(CPython's default). A relay holds a few thousand short-lived objects per batch in flight (ops,
items, frames), so that count was crossed 140 times a second at 13,000 msgs/s; each collection
walked what was in flight and found nothing to free (reference counting had freed it), and with
the older generations' walks that followed, the collector took 7 % of the relay's CPU.
:data:`YOUNG_THRESHOLD` lets what is in flight come and go between collections; cyclic garbage
waits at most that many objects longer.
"""

from __future__ import annotations

import gc

#: tracked objects made beyond those freed before the youngest generation is collected
YOUNG_THRESHOLD = 50_000

_settled = False


def settle_heap() -> None:
    """Collect once, freeze what is left, and collect the young less often (once per process)."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


__all__ = ["YOUNG_THRESHOLD", "settle_heap"]
