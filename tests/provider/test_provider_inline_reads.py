"""Uncached reads (the per-turn recall, the read tools) run on the calling hook's thread
(isokron.provider.inline), against the real substrate through a TCP proxy that can hang: they
answer on that thread, fall back to the provider's I/O loop when they cannot, stay bounded by
the hook timeout when the database hangs, and recover on a new connection."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from provider_helpers import TcpProxy, tagged

from isokron.provider.loop import LOOP_THREAD_NAME
from isokron.substrate.dsn import SubstrateDSNs

NODE = {
    "node_type": "decision",
    "title": "Tenant isolation by row-level security",
    "content": "Every workspace table has RLS enabled and forced.",
}
MESSAGE = "How do we handle tenant isolation again?"


def wait_until(what: str, condition: Callable[[], bool], limit: float = 90.0) -> None:
    """Poll ``condition`` until it holds (``limit`` only keeps a broken build from hanging)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < limit, f"{what}: not within {limit:.0f}s"
        time.sleep(0.02)


def thread_of_read(provider: Any, ws: str) -> str:
    """Run a read through the provider's reader; the name of the thread it ran on."""

    async def read(db: Any) -> str:
        assert await db.fetchval("SELECT 1") == 1
        return threading.current_thread().name

    return str(provider._reader.run(ws, read))


def test_reads_run_on_the_calling_thread_unless_it_cannot(
    substrate: SubstrateDSNs, kora_workspace, make_provider
) -> None:
    ws = kora_workspace()
    provider = make_provider(ws)
    provider.handle_tool_call("iso_node_create", NODE)
    assert "Tenant isolation by row-level security" in provider.prefetch(MESSAGE, session_id="")
    tried = caught = 0

    tried += 1  # a plain thread: the read runs on it
    caught += thread_of_read(provider, ws.workspace_id) == threading.current_thread().name

    tried += 1  # a thread that runs an event loop of its own: on the provider's loop
    async def from_a_loop() -> str:
        return thread_of_read(provider, ws.workspace_id)

    caught += asyncio.run(from_a_loop()) == LOOP_THREAD_NAME

    tried += 1  # the inline connection busy with another thread's read: on the provider's loop
    holding, release = threading.Event(), threading.Event()

    async def slow(db: Any) -> str:
        holding.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return threading.current_thread().name

    other: dict[str, str] = {}
    holder = threading.Thread(
        target=lambda: other.update(name=provider._reader.run(ws.workspace_id, slow)),
        name="hook-holding-the-connection",
    )
    holder.start()
    assert holding.wait(60)
    caught += thread_of_read(provider, ws.workspace_id) == LOOP_THREAD_NAME
    release.set()
    holder.join(60)
    assert other["name"] == "hook-holding-the-connection"

    print(f"[inline reads] {caught} of {tried} placements as designed")
    assert caught == tried
    # After all of that the calling thread has the connection again, and the recall answers.
    assert thread_of_read(provider, ws.workspace_id) == threading.current_thread().name
    assert "Tenant isolation by row-level security" in provider.prefetch(MESSAGE, session_id="")


def test_a_hung_database_bounds_the_recall_and_a_new_connection_recovers(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    ws = kora_workspace()
    proxy = TcpProxy(substrate.reader)
    proxy.start()
    provider = make_provider(ws, reader_dsn=proxy.dsn, hook_timeout_seconds=1.0)
    try:
        provider.handle_tool_call("iso_node_create", NODE)
        assert "Tenant isolation" in provider.prefetch(MESSAGE, session_id="")
        proxy.freeze()  # the inline connection is open: its next statement gets no answer
        answered: list[str] = []
        hook = threading.Thread(target=lambda: answered.append(provider.prefetch(MESSAGE)))
        hook.start()
        hook.join(60)  # the hook timeout is 1 s; 60 s only keeps a broken build from hanging
        assert answered == [""], "the recall did not give up on a hung database"
        assert provider._reader.breaker.down
        unavailable = tagged(provider_logs, "[isokron.provider.substrate.unavailable]")
        assert len(unavailable) == 1 and "did not answer" in unavailable[0].getMessage()
        # While the breaker is open a hook does not wait on the database at all.
        assert provider.prefetch(MESSAGE) == ""
        proxy.thaw()
        wait_until("substrate recovered", lambda: not provider._reader.breaker.down)
        # The dropped connection is replaced: the recall answers again, on this thread.
        wait_until(
            "recall answers again",
            lambda: "Tenant isolation" in provider.prefetch(MESSAGE, session_id=""),
        )
        assert thread_of_read(provider, ws.workspace_id) == threading.current_thread().name
        assert tagged(provider_logs, "[isokron.provider.substrate.recovered]", logging.INFO)
    finally:
        provider.shutdown()
        proxy.thaw()
        proxy.stop()


def admin_fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_a_connection_the_server_closed_while_idle_is_replaced_not_used(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    """The inline connection's loop runs only during a read: a connection the server closed in
    between (a restart, a terminated backend) must not fail the next read or open the breaker."""
    ws = kora_workspace()
    proxy = TcpProxy(substrate.reader)
    proxy.start()
    provider = make_provider(ws, reader_dsn=proxy.dsn)
    reader_role = substrate.reader.split("//", 1)[1].split("@", 1)[0].split(":")[0]
    try:
        provider.handle_tool_call("iso_node_create", NODE)
        assert "Tenant isolation" in provider.prefetch(MESSAGE, session_id="")
        tried = answered = 0
        for _ in range(3):  # the database goes away and comes back while the provider is idle
            proxy.stop()
            time.sleep(0.3)
            proxy.start()
            tried += 1
            answered += "Tenant isolation" in provider.prefetch(MESSAGE, session_id="")
        for i in range(3):  # every reader backend is terminated while the provider is idle
            killed = admin_fetch(
                substrate.admin,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                reader_role,
            )
            assert killed, f"round {i}: no reader backend to terminate"
            tried += 1
            found = provider.handle_tool_call("iso_node_search", {"query": "tenant"})
            answered += "Tenant isolation" in found
        print(f"[inline reads] {answered} of {tried} reads after a server-side close answered")
        assert answered == tried
        assert not tagged(provider_logs, "[isokron.provider.substrate.unavailable]")
        assert not tagged(provider_logs, "[isokron.provider.hook_failed]")
    finally:
        provider.shutdown()
        proxy.stop()


def test_a_read_given_up_on_does_not_keep_running_on_the_server(
    substrate: SubstrateDSNs, kora_workspace, make_provider
) -> None:
    """Over TCP, PostgreSQL does not notice a closed client while a statement runs: the inline
    connection's statements carry the hook timeout as their statement_timeout."""
    ws = kora_workspace()
    proxy = TcpProxy(substrate.reader)
    proxy.start()
    provider = make_provider(ws, reader_dsn=proxy.dsn, hook_timeout_seconds=1.0)
    marker = f"inline_read_given_up_{time.monotonic_ns()}"

    async def slow(db: Any) -> Any:
        return await db.fetchval(f"SELECT pg_sleep(600) /* {marker} */")

    def running() -> list[dict[str, Any]]:
        return admin_fetch(
            substrate.admin,
            "SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )

    try:
        for _ in range(3):
            try:
                provider._reader.run(ws.workspace_id, slow)
            except TimeoutError as exc:
                assert "no result within 1.0s" in str(exc)
            else:
                raise AssertionError("a 600 s statement answered within the 1 s hook timeout")
            provider._reader.breaker.succeeded()
        # Without a statement timeout these would run for 10 minutes.
        wait_until("the statements given up on ended on the server", lambda: not running(), 60)
    finally:
        admin_fetch(
            substrate.admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1 "
            "AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )
        provider.shutdown()
        proxy.stop()
