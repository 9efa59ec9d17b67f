"""Process settings for a long-running server, applied once it has started.

CPython's cyclic garbage collector walks every tracked object of its oldest generation now and
then. A server that has just started holds a couple of hundred thousand long-lived objects
(modules, the ASGI app, its routes and caches), so such a walk paused the relay's event loop for
up to 140 ms and the gateway's for 60 ms in ``bench/gateway.py``, and every request in flight
waited. Freezing what exists once the server has started moves it out of the collector's sight
(it is never freed, and is not meant to be); later collections see only what came after.
"""

from __future__ import annotations

import gc

_settled = False


def settle_heap() -> None:
    """Collect once, then freeze what is left (once per process)."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()


__all__ = ["settle_heap"]
