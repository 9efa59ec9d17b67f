"""``tresen business demo``: the pieces it starts work together, and the five printed pywa
lines (run as printed, against the demo's gateway) deliver a message the person decrypts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tresen.cli.business_demo import start_demo, stop_demo
from tresen.client.secure import Message


async def test_demo_and_its_pywa_lines(tmp_path: Path) -> None:
    demo = await start_demo(tmp_path, port=0)
    try:
        code = "\n".join(demo.pywa_lines())
        assert code.count("\n") == 4  # five lines
        # run the lines as a user would: in their own Python process
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
        async with asyncio.timeout(60):
            assert await proc.wait() == 0
        async with asyncio.timeout(10):
            while not isinstance(event := await demo.person.recv(None), Message):
                pass
        assert event.content["body"] == "Hello from pywa!"
        assert event.sender == demo.boot.relay_account_id
    finally:
        await stop_demo(demo)
