"""With PostgreSQL or the gateway down, every hook returns, each outage is logged once, writes
wait in the outbox, and the provider recovers by itself when they come back.

Time is a fake clock (it drives the retry back-off): nothing here waits on wall-clock time or
asserts on it. That each wait is bounded below Hermes's 8 s budget is a property of the
configuration, tested in test_provider_config.py.
"""

from __future__ import annotations

import json
import logging

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
from isokron.substrate.dsn import SubstrateDSNs


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
            provider.handle_tool_call("iso_node_create", {"node_type": "f", "title": "t"})
        )
        assert write["code"] == "unavailable"
    assert provider._writer is not None and provider._writer.pending == 3

    assert (
        len(tagged(provider_logs, "[isokron.provider.substrate.unavailable]", logging.ERROR)) == 1
    )
    assert len(tagged(provider_logs, "[isokron.provider.gateway.unavailable]", logging.ERROR)) == 1
    assert len(tagged(provider_logs, "[kora.chain.emit.failed]", logging.ERROR)) <= 1
    assert not tagged(provider_logs, "[isokron.provider.hook_failed]")

    proxy.start()
    gw_proxy.start()
    try:
        clock.now += 120  # past every retry time
        provider.on_turn_start(4, "hello again")
        assert provider.system_prompt_block().startswith("§1 Identity (Kora Role Charter v1)")
        assert (
            len(tagged(provider_logs, "[isokron.provider.substrate.recovered]", logging.INFO)) == 1
        )
        # A new gateway process starts; the queued writes go out, in order, once it answers.
        assert provider.wait_ready(60)
        provider.sync_turn("q4", "turn 4 used cap_append_event")
        assert provider._writer.pending == 0
        assert len(tagged(provider_logs, "[isokron.provider.gateway.recovered]", logging.INFO)) == 1
        summaries = [e["summary"] for e in scratchpad_rows(substrate.admin, ws.workspace_id)]
        assert summaries == [f"turn {n} used cap_append_event" for n in (1, 2, 3, 4)]
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
        assert (
            len(tagged(provider_logs, "[isokron.provider.substrate.unavailable]", logging.ERROR))
            == 1
        )
        proxy.start()
        clock.now += 120
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
    clock = FakeClock()
    provider = make_provider(
        ws, clock=clock, mcp_endpoint=f"http://127.0.0.1:{port}/mcp", wait=False
    )
    assert provider.system_prompt_block().startswith("§1 Identity (Kora Role Charter v1)")
    provider.sync_turn("q1", "first, with cap_iso_node_create")
    provider.on_memory_write("add", "memory", "second")
    refused = json.loads(
        provider.handle_tool_call("iso_node_create", {"node_type": "f", "title": "t"})
    )
    assert refused["code"] == "unavailable"
    assert provider._writer is not None and provider._writer.pending == 2
    assert len(tagged(provider_logs, "[isokron.provider.gateway.unavailable]", logging.ERROR)) == 1

    gateway = start_http_gateway(substrate, port)
    try:
        clock.now += 120
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
            "kora.session.ended",
        ]
        assert len(tagged(provider_logs, "[isokron.provider.gateway.recovered]")) == 1
        assert_chain_verifies(substrate.admin, ws.workspace_id)
    finally:
        provider.shutdown()
        stop_http_gateway(gateway)
