"""``fdatasync`` awaited on the event loop, without a thread where Linux allows it.

A commit that waits for its fsync in a worker thread hands the GIL back and forth: the thread
needs it to start the call and again to return, and while the loop runs Python it waits for the
interpreter's switch interval (5 ms) each time. Measured on the relay's writer, the handoff cost
more CPU than the commit itself (120-240 µs a commit) and held a finished commit's answer back
by milliseconds at 5,000 msgs/s.

:class:`AioSync` asks the kernel instead: Linux AIO's ``IOCB_CMD_FDSYNC`` (asynchronous on every
filesystem since Linux 4.18) runs the flush in a kernel worker and signals an eventfd that the
loop watches, so the loop never blocks and no Python thread is involved. Where that is not
available (another OS or architecture, an old kernel, a sandbox that forbids the calls)
:func:`open_syncer` gives a :class:`ThreadSync`, which runs ``os.fdatasync`` in a thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import platform
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

log = logging.getLogger("tresen.storage")

#: Linux's AIO system call numbers: io_setup, io_destroy, io_getevents, io_submit
_SYSCALLS = {
    "x86_64": (206, 207, 208, 209),
    "aarch64": (0, 1, 4, 2),
}
_IOCB_CMD_FDSYNC = 3
_IOCB_FLAG_RESFD = 1
_MAX_EVENTS = 64


class _Iocb(ctypes.Structure):
    """``struct iocb`` of linux/aio_abi.h (little-endian)."""

    _fields_ = [
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int32),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    ]


class _IoEvent(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    ]


class Syncer(Protocol):
    async def fdatasync(self, fd: int) -> None:
        """Return once what was written to ``fd`` is on stable storage; raise ``OSError``."""
        ...

    def close(self) -> None: ...


class ThreadSync:
    """``os.fdatasync`` in a worker thread: works everywhere."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tresen-fsync")

    async def fdatasync(self, fd: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, os.fdatasync, fd)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class AioSync:
    """``fdatasync`` by Linux AIO, completed through an eventfd the loop reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, calls: tuple[int, int, int, int]) -> None:
        self.loop = loop
        self.setup, self.destroy, self.getevents, self.submit = (ctypes.c_long(c) for c in calls)
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.ctx = ctypes.c_ulong(0)
        if self.libc.syscall(self.setup, _MAX_EVENTS, ctypes.byref(self.ctx)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"io_setup: {os.strerror(code)}")
        self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.events = (_IoEvent * _MAX_EVENTS)()
        self.no_wait = (ctypes.c_long * 2)(0, 0)  # a zero timespec: reap what is done
        #: request id -> (its iocb, kept alive until the kernel is done with it; its future)
        self.waiting: dict[int, tuple[_Iocb, asyncio.Future[None]]] = {}
        self.next_id = 0
        self.closed = False
        loop.add_reader(self.eventfd, self._reap)

    async def fdatasync(self, fd: int) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "the syncer is closed")
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # its completions are read by the loop it was opened on
            await loop.run_in_executor(None, os.fdatasync, fd)
            return
        self.next_id += 1
        request = self.next_id
        iocb = _Iocb(
            aio_data=request,
            aio_lio_opcode=_IOCB_CMD_FDSYNC,
            aio_fildes=fd,
            aio_flags=_IOCB_FLAG_RESFD,
            aio_resfd=self.eventfd,
        )
        code = self.start(iocb)
        if code == errno.EAGAIN:  # the kernel's queue is full: flush the plain way
            await self.loop.run_in_executor(None, os.fdatasync, fd)
            return
        if code:
            raise OSError(code, f"io_submit: {os.strerror(code)}")
        future = self.loop.create_future()
        self.waiting[request] = (iocb, future)
        await future

    def start(self, iocb: _Iocb) -> int:
        """Submit one request; 0, or the errno it was refused with (EINTR: tried again)."""
        pointers = (ctypes.POINTER(_Iocb) * 1)(ctypes.pointer(iocb))
        while self.libc.syscall(self.submit, self.ctx, 1, pointers) != 1:
            code = ctypes.get_errno()
            if code != errno.EINTR:
                return code
        return 0

    def _reap(self) -> None:
        try:
            os.eventfd_read(self.eventfd)
        except BlockingIOError:
            return
        while self.waiting:
            n = self.libc.syscall(
                self.getevents, self.ctx, 0, _MAX_EVENTS, self.events, self.no_wait
            )
            if n < 0 and ctypes.get_errno() == errno.EINTR:
                continue
            if n <= 0:
                return
            for event in self.events[:n]:
                _, future = self.waiting.pop(int(event.data), (None, None))
                if future is None or future.done():
                    continue
                if event.res < 0:
                    future.set_exception(OSError(-event.res, os.strerror(-event.res)))
                else:
                    future.set_result(None)

    def close(self) -> None:
        """Stop; flushes still running are waited for by the kernel (``io_destroy``)."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.eventfd)
        self.libc.syscall(self.destroy, self.ctx)
        os.close(self.eventfd)
        for _, future in self.waiting.values():
            if not future.done():
                future.set_exception(OSError(errno.EBADF, "the syncer was closed"))
        self.waiting.clear()


def probe(syncer: AioSync, fd: int) -> bool:
    """Whether this kernel flushes ``fd`` by AIO (before 4.18 ``IOCB_CMD_FDSYNC`` is refused)."""
    if syncer.start(_Iocb(aio_data=0, aio_lio_opcode=_IOCB_CMD_FDSYNC, aio_fildes=fd)):
        return False
    while True:  # a signal may interrupt the wait (EINTR): wait again
        done = syncer.libc.syscall(syncer.getevents, syncer.ctx, 1, 1, syncer.events, None)
        if done >= 0 or ctypes.get_errno() != errno.EINTR:
            return bool(done == 1 and syncer.events[0].res == 0)


def open_syncer(probe_fd: int, *, use_aio: bool = True) -> Syncer:
    """The best syncer for files on the filesystem of ``probe_fd``, for the running loop."""
    calls = _SYSCALLS.get(platform.machine())
    if use_aio and sys.platform == "linux" and calls is not None and sys.byteorder == "little":
        try:
            syncer = AioSync(asyncio.get_running_loop(), calls)
        except OSError as exc:
            log.info("flushing commits in a thread: Linux AIO is not available (%s)", exc)
        else:
            if probe(syncer, probe_fd):
                return syncer
            syncer.close()
            log.info("flushing commits in a thread: this kernel has no asynchronous fdatasync")
    return ThreadSync()


__all__ = ["AioSync", "Syncer", "ThreadSync", "open_syncer"]
