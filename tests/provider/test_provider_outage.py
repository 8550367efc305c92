"""With PostgreSQL or the gateway down, every hook returns, each outage is logged once, writes
wait in the outbox, and the provider recovers by itself when they come back.

Recovery needs no hook call: the watchdog probes and delivers by itself; the tests poll for
it and print how long it took (nothing asserts on time). The fake clock only ages the cache.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from provider_helpers import (
    TcpProxy,
    assert_chain_verifies,
    chain_events,
    free_port,
    scratchpad_rows,
    start_http_gateway,
    stop_http_gateway,
    tagged,
)

from isokron.provider.prompt_block import SOURCE_OF_TRUTH_LABEL
from isokron.provider.provider import REVERIFIED_HEADING
from isokron.substrate.dsn import SubstrateDSNs


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(what: str, condition: Callable[[], bool], limit: float = 90.0) -> float:
    """Poll ``condition`` until it holds; returns (and prints) how long that took. ``limit``
    only keeps a broken build from hanging: no test asserts on the time."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < limit, f"{what}: not within {limit:.0f}s"
        time.sleep(0.05)
    took = time.monotonic() - started
    print(f"{what}: {took:.2f}s")
    return took


def test_database_down_at_start_then_back(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    ws = kora_workspace()
    proxy = TcpProxy(substrate.reader)  # not started: nothing listens on its port yet
    gw_proxy = TcpProxy(substrate.gateway)
    clock = FakeClock()
    provider = make_provider(
        ws, clock=clock, reader_dsn=proxy.dsn, gateway_dsn=gw_proxy.dsn, wait=False
    )

    for turn in range(1, 4):
        provider.on_turn_start(turn, "hello")
        block = provider.system_prompt_block()
        assert block.startswith("§1 Identity — NOT VERIFIED")
        assert "could not be reached" in block and block.endswith(SOURCE_OF_TRUTH_LABEL)
        assert provider.prefetch("tenant isolation", session_id="") == ""
        assert provider.session_context() is None
        provider.sync_turn(f"q{turn}", f"turn {turn} used cap_append_event")
        read = json.loads(provider.handle_tool_call("iso_node_search", {"query": "x"}))
        assert read["code"] == "unavailable"
        write = json.loads(
            provider.handle_tool_call("iso_node_create", {"node_type": "f", "title": f"t{turn}"})
        )
        assert write["status"] == "queued", write  # on disk, delivered later
    assert provider._writer is not None and provider._writer.pending == 6

    assert (
        len(tagged(provider_logs, "[isokron.provider.substrate.unavailable]", logging.ERROR)) == 1
    )
    assert len(tagged(provider_logs, "[isokron.provider.gateway.unavailable]", logging.ERROR)) == 1
    assert not tagged(provider_logs, "[isokron.provider.hook_failed]")
    assert not [r for r in provider_logs.records if r.exc_info]

    proxy.start()
    gw_proxy.start()
    try:
        # No hook call is needed: the watchdog probes, re-reads and delivers by itself.
        wait_until("substrate recovered", lambda: not provider._reader.breaker.down)
        wait_until("outbox delivered", lambda: provider._writer.pending == 0)
        assert (
            len(tagged(provider_logs, "[isokron.provider.substrate.recovered]", logging.INFO)) == 1
        )
        assert len(tagged(provider_logs, "[isokron.provider.gateway.recovered]", logging.INFO)) == 1
        # The session's system prompt said NOT VERIFIED: the turn context now carries the
        # verified identity (Hermes keeps a session's system prompt).
        wait_until(
            "charter re-read", lambda: provider.prefetch("hi").startswith(REVERIFIED_HEADING)
        )
        assert "§1 Identity (Kora Role Charter v1)" in provider.prefetch("hi")
        provider.sync_turn("q4", "turn 4 used cap_append_event")
        summaries = [e["summary"] for e in scratchpad_rows(substrate.admin, ws.workspace_id)]
        assert summaries == [f"turn {n} used cap_append_event" for n in (1, 2, 3, 4)]
        types = [
            e["event_type"]
            for e in chain_events(substrate.admin, ws.workspace_id)
            if e["actor_kind"] == "kora"
        ]
        assert types.count("kora.node.created") == 3
        assert_chain_verifies(substrate.admin, ws.workspace_id)
    finally:
        provider.shutdown()
        proxy.stop()
        gw_proxy.stop()


def test_database_lost_mid_session_keeps_the_last_values_and_recovers(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    ws = kora_workspace()
    proxy = TcpProxy(substrate.reader)
    proxy.start()
    clock = FakeClock()
    provider = make_provider(ws, clock=clock, reader_dsn=proxy.dsn)
    try:
        provider.on_turn_start(1, "hi")
        assert provider.system_prompt_block().startswith("§1 Identity (Kora Role Charter v1)")
        proxy.stop()
        clock.now += 61  # every cached read is stale now
        provider.on_turn_start(2, "hi")
        block = provider.system_prompt_block()
        assert block.startswith("§1 Identity (Kora Role Charter v1)")  # verified earlier
        assert "could not reach the substrate just now" in block
        assert provider.prefetch("hi") == ""  # the prompt was verified: nothing to repeat
        assert (
            len(tagged(provider_logs, "[isokron.provider.substrate.unavailable]", logging.ERROR))
            == 1
        )
        proxy.start()
        wait_until("substrate recovered", lambda: not provider._reader.breaker.down)
        provider.on_turn_start(3, "hi")
        assert "could not reach" not in provider.system_prompt_block()
        assert len(tagged(provider_logs, "[isokron.provider.substrate.recovered]")) == 1
    finally:
        provider.shutdown()
        proxy.stop()


def test_http_gateway_down_then_up(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    ws = kora_workspace()
    port = free_port()
    provider = make_provider(ws, mcp_endpoint=f"http://127.0.0.1:{port}/mcp", wait=False)
    assert provider.system_prompt_block().startswith("§1 Identity (Kora Role Charter v1)")
    provider.sync_turn("q1", "first, with cap_iso_node_create")
    provider.on_memory_write("add", "memory", "second")
    queued = json.loads(
        provider.handle_tool_call("iso_node_create", {"node_type": "f", "title": "t"})
    )
    assert queued["status"] == "queued", queued
    assert provider._writer is not None and provider._writer.pending == 3
    assert len(tagged(provider_logs, "[isokron.provider.gateway.unavailable]", logging.ERROR)) == 1

    gateway = start_http_gateway(substrate, port)
    try:
        wait_until("outbox delivered", lambda: provider._writer.pending == 0)
        created = json.loads(
            provider.handle_tool_call(
                "iso_node_create", {"node_type": "fact", "title": "over http"}
            )
        )
        assert "node_id" in created, created
        provider.on_session_end([])
        assert provider._writer.pending == 0
        types = [
            e["event_type"]
            for e in chain_events(substrate.admin, ws.workspace_id)
            if e["actor_kind"] == "kora"
        ]
        # the queued writes went first (in order), then the model's call, then the session end
        assert types == [
            "kora.scratchpad.written",
            "kora.scratchpad.written",
            "kora.node.created",
            "kora.node.created",
            "kora.session.ended",
        ]
        assert len(tagged(provider_logs, "[isokron.provider.gateway.recovered]")) == 1
        assert_chain_verifies(substrate.admin, ws.workspace_id)
    finally:
        provider.shutdown()
        stop_http_gateway(gateway)
