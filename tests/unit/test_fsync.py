"""Flushing a file from the event loop: Linux AIO where the kernel has it, else a thread."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tresen.storage.fsync import AioSync, Syncer, ThreadSync, open_syncer

AIO = pytest.mark.skipif(sys.platform != "linux", reason="Linux AIO")


@pytest.fixture(params=["aio", "thread"])
async def syncer(request: pytest.FixtureRequest, tmp_path: Path) -> Syncer:
    probe = os.open(tmp_path, os.O_RDONLY)
    try:
        made = open_syncer(probe, use_aio=request.param == "aio")
    finally:
        os.close(probe)
    if request.param == "aio" and not isinstance(made, AioSync):
        made.close()
        pytest.skip("this kernel flushes no file by AIO")
    yield made
    made.close()


async def test_flushes_complete_while_the_loop_runs(syncer: Syncer, tmp_path: Path) -> None:
    fds = [os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT) for i in range(8)]
    flushing = False
    ticks = 0  # loop turns taken while flushes were running
    seen_waiting = 0  # AIO: the most requests seen in the kernel at once

    async def ticker() -> None:
        nonlocal ticks, seen_waiting
        while True:
            if flushing:
                ticks += 1
                if isinstance(syncer, AioSync):
                    seen_waiting = max(seen_waiting, len(syncer.waiting))
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    try:
        for round_ in range(20):
            for fd in fds:
                os.pwrite(fd, os.urandom(4096), round_ * 4096)
            flushing = True
            await asyncio.gather(*(syncer.fdatasync(fd) for fd in fds))
            flushing = False
    finally:
        running.cancel()
        for fd in fds:
            os.close(fd)
    assert ticks > 0  # the loop went on while the flushes ran
    if isinstance(syncer, AioSync):
        assert seen_waiting > 0  # with requests in the kernel, not behind a blocking call
        assert syncer.waiting == {}


async def test_a_bad_descriptor_fails_that_flush_only(syncer: Syncer, tmp_path: Path) -> None:
    good = os.open(tmp_path / "good", os.O_RDWR | os.O_CREAT)
    bad = os.open(tmp_path / "bad", os.O_RDWR | os.O_CREAT)
    os.close(bad)
    try:
        results = await asyncio.gather(
            syncer.fdatasync(bad), syncer.fdatasync(good), return_exceptions=True
        )
    finally:
        os.close(good)
    assert isinstance(results[0], OSError)
    assert results[1] is None


@AIO
async def test_a_closed_aio_syncer_refuses_and_fails_its_waiters(tmp_path: Path) -> None:
    probe = os.open(tmp_path, os.O_RDONLY)
    try:
        syncer = open_syncer(probe)
    finally:
        os.close(probe)
    if not isinstance(syncer, AioSync):
        syncer.close()
        pytest.skip("this kernel flushes no file by AIO")
    syncer.close()
    syncer.close()  # twice is fine
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(OSError):
            await syncer.fdatasync(fd)
    finally:
        os.close(fd)


def test_the_thread_fallback_is_chosen_when_aio_is_off(tmp_path: Path) -> None:
    async def main() -> str:
        probe = os.open(tmp_path, os.O_RDONLY)
        try:
            syncer = open_syncer(probe, use_aio=False)
        finally:
            os.close(probe)
        syncer.close()
        return type(syncer).__name__

    assert asyncio.run(main()) == ThreadSync.__name__


def test_an_aio_syncer_used_from_another_loop_still_flushes(tmp_path: Path) -> None:
    """A store opened on one event loop and used on another (a test's, a CLI's) must not wait
    for completions that only the first loop would read."""
    opened = asyncio.new_event_loop()
    try:

        async def make() -> Syncer:
            probe = os.open(tmp_path, os.O_RDONLY)
            try:
                return open_syncer(probe)
            finally:
                os.close(probe)

        syncer = opened.run_until_complete(make())
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        try:
            os.pwrite(fd, b"x" * 4096, 0)
            asyncio.run(asyncio.wait_for(syncer.fdatasync(fd), 10))
        finally:
            os.close(fd)
            syncer.close()
    finally:
        opened.close()
