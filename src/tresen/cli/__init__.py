"""The ``tresen`` command line."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_server(main: Coroutine[Any, Any, T]) -> T:
    """Run a server's main coroutine on uvloop (asyncio's own loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        return asyncio.run(main)
    return uvloop.run(main)
