"""Reads run on the calling hook's own thread: a private event loop and one reader connection.

A hook that submits a read to the provider's I/O loop (:mod:`isokron.provider.loop`) and waits for
it pays two thread hand-offs, and waits behind whatever that loop is doing at the time, such as
decoding a background refresh of the session context. The per-turn recall is such a read. Here
the calling thread runs the read itself, on an event loop and a connection kept for this
purpose, one thread at a time. A thread that finds them in use, or that is already running an
event loop of its own, is told so (:class:`InlineUnavailable`) and uses the I/O loop instead.

A read, connecting included, is bounded by the hook timeout. A read that times out, loses its
connection or finds the substrate down drops the connection; the next read opens a new one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from isokron.errors import SubstrateUnavailableError
from isokron.substrate.connection import connect

log = logging.getLogger("isokron.provider.inline")

T = TypeVar("T")
#: What a read is given: opens (or returns the open) connection.
Opener = Callable[[], Awaitable[asyncpg.Connection]]

#: How long the clean-up after a failed read may run the loop (cancelled tasks only).
_CLEANUP_SECONDS = 1.0
#: Errors after which the connection is not trusted for another read.
_CONNECTION_LOST = (OSError, TimeoutError, asyncpg.InterfaceError, SubstrateUnavailableError)


class InlineUnavailable(RuntimeError):
    """This thread cannot run the read inline now; run it on the provider's I/O loop."""


def _thread_runs_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class InlineReads:
    """One reader connection, used by whichever hook thread holds it, on a loop of its own."""

    def __init__(self, dsn: str, *, connect_timeout: float, timeout: float) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: asyncpg.Connection | None = None
        self._closed = False

    def run(self, read: Callable[[Opener], Awaitable[T]]) -> T:
        """Run ``read`` on this thread, bounded by the timeout; it opens the connection through
        the opener it is given (so that a failure to connect is the read's to report).

        Raises:
            InlineUnavailable: another thread is using the connection, this thread runs an event
                loop, or this has been closed; nothing was run.
            TimeoutError: no answer within the timeout.
            Exception: whatever connecting or ``read`` raised.
        """
        if _thread_runs_a_loop() or not self._lock.acquire(blocking=False):
            raise InlineUnavailable("the inline connection is not available to this thread")
        try:
            if self._closed:
                raise InlineUnavailable("the inline reads have been closed")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            return self._run_on(self._loop, read)
        finally:
            if self._closed:
                self._teardown()
            self._lock.release()

    def close(self, timeout: float) -> None:
        """Close the connection and the loop, waiting at most ``timeout`` for a read another
        thread is running (that read then closes them when it ends)."""
        self._closed = True
        if not self._lock.acquire(timeout=timeout):
            return
        try:
            self._teardown()
        finally:
            self._lock.release()

    def _run_on(self, loop: asyncio.AbstractEventLoop, read: Callable[[Opener], Awaitable[T]]) -> T:
        try:
            return loop.run_until_complete(asyncio.wait_for(read(self._open), self._timeout))
        except Exception as exc:
            conn = self._conn
            if isinstance(exc, _CONNECTION_LOST) or (
                conn is not None and (conn.is_closed() or conn.is_in_transaction())
            ):
                self._drop(loop)
            raise
        except BaseException:  # interrupted: the read may be half done
            self._drop(loop)
            raise

    async def _open(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self._dsn, timeout=self._connect_timeout)
        return self._conn

    def _drop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Forget the connection after a failed read; cancel what the read left on the loop
        (e.g. asyncpg's cancel request for a statement that timed out)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        _cancel_leftovers(loop)
        log.debug("[isokron.provider.inline.dropped] the inline read connection was dropped")

    def _teardown(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if not _thread_runs_a_loop():
            # Let the terminated connection's transport close its socket, then cancel the rest.
            loop.run_until_complete(asyncio.sleep(0))
            _cancel_leftovers(loop)
        loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=_CLEANUP_SECONDS))
