"""A dedicated asyncio event loop on its own daemon thread, with submit-and-wait.

Hermes calls the provider's hooks synchronously from several threads (the main thread, a
short-lived prefetch thread, a single FIFO sync worker). asyncpg pools and MCP sessions belong
to one event loop, so every coroutine that uses them is submitted to this loop and the calling
thread waits for its result with a bound (uncached reads run on the calling thread instead when
they can: :mod:`isokron.provider.inline`). A wait that times out leaves the coroutine
running on the loop (it finishes in the background and fills the cache); the caller moves on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("isokron.provider.loop")

T = TypeVar("T")

LOOP_THREAD_NAME = "isokron-provider-io"
_STOP_TIMEOUT_SECONDS = 10.0


class LoopClosedError(RuntimeError):
    """The loop thread has been stopped; nothing more can be submitted."""


class IoLoop:
    """One event loop running forever on a daemon thread, started lazily."""

    def __init__(self, name: str = LOOP_THREAD_NAME) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def running(self) -> bool:
        """True while the loop thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._stopped:
                raise LoopClosedError("the provider's I/O loop has been stopped")
            if self._loop is not None and self._thread is not None and self._thread.is_alive():
                return self._loop
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(background_error)
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name=self._name, daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            return loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop and return a thread-safe future of its result."""
        try:
            loop = self._ensure_started()
        except LoopClosedError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(
        self, coro: Coroutine[Any, Any, T], timeout: float, *, cancel_on_timeout: bool = False
    ) -> T:
        """Submit ``coro`` and wait at most ``timeout`` seconds for its result.

        Raises:
            TimeoutError: the result did not arrive in time; the coroutine keeps running unless
                ``cancel_on_timeout`` is set.
            LoopClosedError: the loop has been stopped.
            Exception: whatever the coroutine raised.
        """
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("IoLoop.run() called from the loop thread would deadlock")
        future = self.submit(coro)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            if cancel_on_timeout:
                future.cancel()
            raise TimeoutError(f"no result within {timeout:.1f}s") from None

    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def stop(self, cleanup: Coroutine[Any, Any, Any] | None = None) -> None:
        """Run ``cleanup`` (bounded), cancel what is left, stop the loop and join its thread."""
        with self._lock:
            if self._stopped:
                if cleanup is not None:
                    cleanup.close()
                return
            self._stopped = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            if cleanup is not None:
                cleanup.close()
            return
        if cleanup is not None:
            try:
                asyncio.run_coroutine_threadsafe(cleanup, loop).result(_STOP_TIMEOUT_SECONDS)
            except concurrent.futures.TimeoutError:
                log.warning(
                    "[isokron.provider.loop] cleanup did not finish in %.0fs", _STOP_TIMEOUT_SECONDS
                )
            except Exception as exc:  # noqa: BLE001 - shutdown must finish whatever cleanup raised
                log.warning("[isokron.provider.loop] cleanup failed: %s", exc)
        try:
            asyncio.run_coroutine_threadsafe(_cancel_pending(), loop).result(_STOP_TIMEOUT_SECONDS)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_SECONDS)
        if not thread.is_alive():
            loop.close()


def background_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The exception handler of the provider's event loops. asyncio's report of an error
    nobody awaited (e.g. asyncpg closing a connection to a server that went away): one DEBUG
    line, never a traceback in the host's log. Outages are reported once by the breakers."""
    exc = context.get("exception")
    detail = f"{exc.__class__.__name__}: {exc}" if exc is not None else ""
    log.debug("[isokron.provider.loop.background_error] %s %s", context.get("message"), detail)


async def _cancel_pending() -> None:
    """Cancel every other task of the running loop and wait for them to finish."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_SECONDS)
