"""Reads run on the calling hook's own thread: a private event loop and one reader connection.

A hook that submits a read to the provider's I/O loop (:mod:`isokron.provider.loop`) and waits for
it pays two thread hand-offs, and waits behind whatever that loop is doing at the time, such as
decoding a background refresh of the session context. The per-turn recall is such a read. Here
the calling thread runs the read itself, on an event loop and a connection kept for this
purpose, one thread at a time. A thread that finds them in use, or that is already running an
event loop of its own, is told so (:class:`InlineUnavailable`) and uses the I/O loop instead.

A read, connecting included, is bounded by the hook timeout, and so is its statement on the
server (``statement_timeout``: a read given up on does not keep running there). The loop runs
only while a read does, so before the connection is used again the loop first takes in what
arrived meanwhile: a connection the server closed while idle is replaced, not used. A read
that times out, loses its connection or finds the substrate down drops the connection; the
next read opens a new one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from isokron.errors import SubstrateUnavailableError
from isokron.provider.loop import background_error
from isokron.substrate.connection import connect

log = logging.getLogger("isokron.provider.inline")

T = TypeVar("T")

#: How long the clean-up after a failed read may run the loop (cancelled tasks only).
_CLEANUP_SECONDS = 1.0
#: Loop iterations that let a closed socket's end reach the idle connection before reuse.
_IDLE_CHECK_ITERATIONS = 3
#: Errors after which the connection is not trusted for another read.
_CONNECTION_LOST = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    SubstrateUnavailableError,
)


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

    def run(self, read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``read`` on this thread, bounded by the timeout. A read on a connection kept from
        before that finds it closed by the server (terminated while idle, or as it began) is run
        once more on a new connection: the reads are read-only.

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
                self._loop.set_exception_handler(background_error)
            return self._run_on(self._loop, read)
        finally:
            self._lock.release()
            if self._closed:
                self._teardown_if_free()

    def close(self) -> None:
        """Close the connection and the loop now, or, if a read is running on another thread,
        when that read ends (never waiting for it)."""
        self._closed = True
        self._teardown_if_free()

    def _run_on(
        self, loop: asyncio.AbstractEventLoop, read: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        try:
            return loop.run_until_complete(asyncio.wait_for(self._attempt(read), self._timeout))
        except TimeoutError:
            self._drop(loop)
            raise TimeoutError(f"no result within {self._timeout:.1f}s") from None
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

    async def _attempt(self, read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        conn, kept = await self._open()
        try:
            return await read(conn)
        except _CONNECTION_LOST:
            if not (kept and conn.is_closed()):
                raise
        log.debug("[isokron.provider.inline.reconnected] the server had closed the connection")
        conn, _ = await self._open()
        return await read(conn)

    async def _open(self) -> tuple[asyncpg.Connection, bool]:
        """The connection to read on, and whether it was kept from an earlier read."""
        conn = self._conn
        if conn is not None and not conn.is_closed():
            # The loop did not run while the connection sat idle: take in what arrived since
            # (the server closing it, a backend terminated) before trusting it.
            for _ in range(_IDLE_CHECK_ITERATIONS):
                await asyncio.sleep(0)
            if not conn.is_closed():
                return conn, True
        if conn is not None:
            conn.terminate()
        self._conn = None
        self._conn = await connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={"statement_timeout": str(max(1, int(self._timeout * 1000)))},
        )
        return self._conn, False

    def _drop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Forget the connection after a failed read; cancel what the read left on the loop."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        _cancel_leftovers(loop)
        log.debug("[isokron.provider.inline.dropped] the inline read connection was dropped")

    def _teardown_if_free(self) -> None:
        """Tear down unless a read holds the lock (that read does it when it ends)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            conn, self._conn = self._conn, None
            loop, self._loop = self._loop, None
        finally:
            self._lock.release()
        if loop is None:
            if conn is not None:
                conn.terminate()
            return
        if _thread_runs_a_loop():
            # run_until_complete is refused on a thread with a running loop: close on another.
            closer = threading.Thread(target=_close, args=(conn, loop), daemon=True)
            closer.start()
            closer.join(_CLEANUP_SECONDS)
        else:
            _close(conn, loop)


def _close(conn: asyncpg.Connection | None, loop: asyncio.AbstractEventLoop) -> None:
    """Terminate ``conn``, let its transport close its socket, cancel the rest, close ``loop``."""
    if conn is not None:
        conn.terminate()
    loop.run_until_complete(asyncio.sleep(0))
    _cancel_leftovers(loop)
    loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=_CLEANUP_SECONDS))
