"""The relay's disk fills up under SQLite: senders get an error frame, never ``sent``; reads and
connections go on; once there is room again the same relay stores what is resent.

The database lives on a small tmpfs that a ballast file fills to the last byte (a real
ENOSPC, which SQLite reports as SQLITE_FULL). Where ``mount`` is not allowed (not root, a
locked-down container), SQLite's ``max_page_count`` is lowered to the database's size instead:
the same SQLITE_FULL, from inside SQLite. (PostgreSQL refusing writes is in
test_faults_postgres.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tresen.errors import Unavailable
from tresen.storage.sqlite import SqliteDatabase

from ..conftest import POSTGRES, Harness
from .test_multinode import until

pytestmark = pytest.mark.skipif(POSTGRES, reason="the SQLite pass covers a full disk under SQLite")

BODY = os.urandom(32 * 1024)  # incompressible, so every envelope takes pages of its own


class SmallDisk:
    """Where the relay's database lives, and how to make it full and give the room back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False
        self.ballast = path / "ballast"

    def mount(self) -> None:
        self.path.mkdir()
        with contextlib.suppress(OSError):
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(self.path)],
                capture_output=True,
                check=False,
            )
            self.mounted = done.returncode == 0

    def fill(self, relay: Harness) -> None:
        if not self.mounted:
            self._page_limit(relay, "page_count")
            return
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (1 << 20, 4096, 1):  # to the last byte
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self, relay: Harness) -> None:
        if not self.mounted:
            self._page_limit(relay, "1073741823")
            return
        self.ballast.unlink()

    @staticmethod
    def _page_limit(relay: Harness, limit: str) -> None:
        db = relay.services.db
        assert isinstance(db, SqliteDatabase) and db._write is not None
        if limit == "page_count":
            limit = str(db._write.execute("PRAGMA page_count").fetchone()[0])
        db._write.execute(f"PRAGMA max_page_count = {limit}")

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path / "disk")
    small.mount()
    yield small
    small.unmount()


@pytest.fixture
def db_url(disk: SmallDisk) -> str:
    """The relay fixture's database, on the small disk."""
    return f"sqlite:///{disk.path}/relay.db"


async def test_a_full_disk_is_an_error_to_senders_and_sends_work_again_when_room_returns(
    relay: Harness, disk: SmallDisk
) -> None:
    alice, carol, bob = [await relay.new_device() for _ in range(3)]
    raw = await alice.connect(resend_unavailable=False)  # sees the relay's answer itself
    sdk = await carol.connect()
    inbox = await bob.connect(auto_ack=False)  # no deletes: they would free room again
    to = {bob.device_id: BODY}
    acked = [await raw.send(bob.account_id, to, id="before")]

    disk.fill(relay)
    # the room left (a partly used WAL, free pages) goes first; then the relay says no
    with pytest.raises(Unavailable) as refused:
        for n in range(1000):
            acked.append(await raw.send(bob.account_id, to, id=f"m{n}"))
    assert refused.value.code == "unavailable"
    assert "full" in refused.value.message
    refused_id = f"m{len(acked) - 1}"
    # the SDK keeps what was refused and sends it again, until it is stored
    pending = asyncio.create_task(sdk.send(bob.account_id, to, id="resent"))
    await until(lambda: sdk.resent >= 2, "the SDK resends what was refused")
    assert not pending.done()
    # reading still works while nothing can be written
    first = await inbox.recv(timeout=30)
    assert first.id == "before"

    disk.free(relay)
    assert await asyncio.wait_for(pending, 30) == "resent"
    acked += ["resent", await raw.send(bob.account_id, to, id="after")]
    got = [first] + [await inbox.recv(timeout=30) for _ in range(len(acked) - 1)]
    ids = [i.id for i in got]
    assert Counter(ids) == Counter(acked)  # each once; the refused one never
    assert refused_id not in ids and all(i.body == BODY for i in got)
    with contextlib.suppress(TimeoutError):
        extra = await inbox.recv(timeout=0.5)
        raise AssertionError(f"{extra.id} arrived but was never acknowledged")
