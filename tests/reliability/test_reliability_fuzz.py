"""Bad input: property-based fuzzing of every gateway tool through a real MCP client session.

Arguments are generated from each tool's JSON ``inputSchema`` (as ``tools/list`` returns it)
plus hostile variants: wrong types, huge strings, NUL characters, JSON text hiding lone
surrogates or nesting too deep to parse, deep nesting, extra fields. For every call: no crash,
no untyped error (every refusal is ``[code] sentence`` with a documented code, never
``internal``), and nothing partially written: a refused call appends at most its denial event
and no row; an accepted one appends its event(s), each with exactly the row it approves.

What the official client cannot send (lone surrogates, nesting beyond its serializer, invalid
UTF-8) goes as raw JSON-RPC frames on the same HTTP session.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_processes import HeldSession, HttpGatewayProcess, LoopThread, http_session
from reliability_strategies import OPERATOR_TOOLS, WRITE_TOOLS, Objects, tool_arguments
from reliability_support import (
    DENIED,
    EVENT_ROWS,
    Figures,
    Tenant,
    chain_head,
    describe,
    events_after,
    make_tenant,
    refusal,
    row_counts,
    rows_per_event,
    scaled,
)

from isokron.gateway.operations import SPECS
from isokron.substrate import connection
from isokron.substrate.dsn import SubstrateDSNs

SECTION = "fuzz"
EXAMPLES_PER_TOOL = scaled(25)
PROTOCOL_VERSION = "2025-06-18"


@dataclass
class FuzzEnv:
    loop: LoopThread
    pool: asyncpg.Pool
    tenant: Tenant
    kora: HeldSession
    operator: HeldSession
    schemas: dict[str, dict[str, Any]]
    objects: Objects
    codes: Counter[str]


async def _seed(session: HeldSession, objects: Objects) -> None:
    async def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await session.call(tool, args)
        assert refusal(result) is None, result
        return result.structured_content or {}

    for n in range(4):
        objects.add(
            "node",
            (await call("iso_node_create", {"node_type": "fact", "title": f"n{n}"}))["node_id"],
        )
    for n in range(2):
        conv = await call("kora__propose_convention", {"title": f"c{n}", "body": "b"})
        objects.add("proposal", conv["proposal_id"])
        objects.proposal_kinds[conv["proposal_id"]] = "convention"
        change = await call(
            "kora__propose_policy_change",
            {"policy_key": "policy.kora_node_search_default_limit", "proposed_value": 7 + n},
        )
        objects.add("proposal", change["proposal_id"])
        objects.proposal_kinds[change["proposal_id"]] = "policy_change"
    objects.add(
        "escalation", (await call("kora__raise_escalation", {"reason": "q"}))["escalation_id"]
    )
    for n in range(2):
        held = await call("iso_node_create", {"node_type": "fact", "title": f"delete all of {n}"})
        objects.add("escalation", held["escalation_id"])


@pytest.fixture(scope="module")
def fuzz(substrate: SubstrateDSNs, http_gateway: HttpGatewayProcess) -> Iterator[FuzzEnv]:
    loop = LoopThread()

    async def setup() -> FuzzEnv:
        pool = await connection.create_pool(substrate.admin, min_size=1, max_size=4)
        tenant = await make_tenant(pool, "fuzz")
        kora = await HeldSession(lambda: http_session(http_gateway.url, tenant.kora_token)).open()
        operator = await HeldSession(
            lambda: http_session(http_gateway.url, tenant.operator_token)
        ).open()
        schemas = {t.name: dict(t.input_schema) for t in (await kora.client.list_tools()).tools}
        objects = Objects()
        await _seed(kora, objects)
        return FuzzEnv(loop, pool, tenant, kora, operator, schemas, objects, Counter())

    env = loop.run(setup())
    try:
        yield env
    finally:

        async def teardown() -> None:
            await env.kora.close()
            await env.operator.close()
            await env.pool.close()

        loop.run(teardown())
        loop.close()


async def _state(pool: asyncpg.Pool, ws: str) -> tuple[tuple[int, int], dict[str, int]]:
    return await chain_head(pool, ws), await row_counts(pool, ws)


async def _check(
    env: FuzzEnv, tool: str, before: tuple[tuple[int, int], dict[str, int]], error: Any, data: Any
) -> None:
    """Nothing partially written: the chain and the rows agree with the call's outcome."""
    ws = env.tenant.workspace_id
    (seq, count), rows = await _state(env.pool, ws)
    assert seq == count, "the chain has a gap"
    new = await events_after(env.pool, ws, before[0][0])
    types = [e["event_type"] for e in new]
    grown = {t: rows[t] - before[1][t] for t in rows if rows[t] != before[1][t]}
    if error is not None or tool not in WRITE_TOOLS or (data or {}).get("replayed"):
        allowed_events = 1 if error is not None and tool in WRITE_TOOLS else 0
        assert all(t == DENIED for t in types) and len(types) <= allowed_events, types
        assert grown == {}, grown
        return
    assert 1 <= len(types) <= 2 and DENIED not in types, types
    expected: Counter[str] = Counter()
    row_events = [e for e in new if EVENT_ROWS.get(e["event_type"])]
    for e in row_events:
        expected[EVENT_ROWS[e["event_type"]][0]] += 1  # type: ignore[index]
    assert grown == dict(expected), (types, grown)
    approving = await rows_per_event(env.pool, ws, [e["event_id"] for e in row_events])
    assert all(n == 1 for n in approving.values()), approving


def test_tools_list_matches_the_registry(fuzz: FuzzEnv) -> None:
    assert set(fuzz.schemas) == set(SPECS)


@pytest.mark.parametrize("tool", sorted(SPECS))
@settings(
    max_examples=EXAMPLES_PER_TOOL,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_tool_survives_generated_and_hostile_arguments(
    tool: str, data: st.DataObject, fuzz: FuzzEnv, figures: Figures
) -> None:
    args = data.draw(tool_arguments(fuzz.schemas[tool], fuzz.objects), label="arguments")
    session = fuzz.operator if tool in OPERATOR_TOOLS else fuzz.kora
    figures.add(SECTION, "gateway fuzz cases run")
    figures.add(SECTION, "gateway fuzz failures", 0)
    try:
        before = fuzz.loop.run(_state(fuzz.pool, fuzz.tenant.workspace_id))
        try:
            result = fuzz.loop.run(session.call(tool, args))
        except Exception as exc:  # a crash is what this test looks for
            raise AssertionError(f"{tool} crashed the call: {describe(exc)}") from exc
        error = refusal(result)  # typed, or AssertionError
        code = error["code"] if error else "ok"
        fuzz.codes[code] += 1
        assert code not in ("internal", "unavailable"), error
        fuzz.loop.run(_check(fuzz, tool, before, error, result.structured_content))
    except AssertionError:
        figures.add(SECTION, "gateway fuzz failures")
        raise
    figures.set(SECTION, "outcomes seen", json.dumps(dict(sorted(fuzz.codes.items()))))


# ------------------------------------------------------------------- raw JSON-RPC frames


def _raw_frames(schema: dict[str, Any], tool: str) -> list[tuple[str, bytes]]:
    """Frames the official client cannot produce: lone surrogates, too deep, invalid UTF-8."""
    frames: list[tuple[str, bytes]] = []

    def frame(arguments_json: str) -> bytes:
        return (
            '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"'
            + tool
            + '","arguments":'
            + arguments_json
            + "}}"
        ).encode()

    for name in schema.get("properties", {}):
        frames.append((f"{name}: lone surrogate", frame('{"' + name + '":"x\\ud800y"}')))
        frames.append((f"{name}: lone low surrogate key", frame('{"\\udc00' + name + '":"x"}')))
        frames.append(
            (
                f"{name}: 3000 levels",
                frame('{"' + name + '":' + '{"a":' * 3000 + "1" + "}" * 3000 + "}"),
            )
        )
        frames.append(
            (f"{name}: invalid UTF-8", frame('{"' + name + '":"@"}').replace(b"@", b"\xff\xfe"))
        )
    return frames


async def _raw_session(url: str, token: str) -> tuple[httpx.AsyncClient, dict[str, str]]:
    http = httpx.AsyncClient(timeout=30)
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "reliability-raw", "version": "0"},
        },
    }
    response = await http.post(url, headers=headers, content=json.dumps(init))
    assert response.status_code == 200, response.text
    headers["mcp-session-id"] = response.headers["mcp-session-id"]
    headers["mcp-protocol-version"] = PROTOCOL_VERSION
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(url, headers=headers, content=json.dumps(note))).status_code == 202
    return http, headers


async def test_raw_frames_the_client_cannot_send_are_refused_and_write_nothing(
    fuzz: FuzzEnv, http_gateway: HttpGatewayProcess, admin_pool: asyncpg.Pool, figures: Figures
) -> None:
    ws = fuzz.tenant.workspace_id
    before = await chain_head(admin_pool, ws), await row_counts(admin_pool, ws)
    http, headers = await _raw_session(http_gateway.url, fuzz.tenant.kora_token)
    sent = 0
    unexpected: list[str] = []
    try:
        for tool in sorted(SPECS):
            for label, body in _raw_frames(fuzz.schemas[tool], tool):
                response = await http.post(http_gateway.url, headers=headers, content=body)
                sent += 1
                ok = response.status_code == 400 and response.json()["error"]["code"] == -32700
                if not ok:
                    unexpected.append(
                        f"{tool} {label}: HTTP {response.status_code} {response.text[:200]}"
                    )
        # The session carries on after every rejected frame.
        probe = {
            "jsonrpc": "2.0",
            "id": 99,
            "method": "tools/call",
            "params": {"name": "kora__read_kora_capability_row", "arguments": {}},
        }
        response = await http.post(http_gateway.url, headers=headers, content=json.dumps(probe))
        assert response.status_code == 200 and '"actor_kind"' in response.text
    finally:
        await http.aclose()
    after = await chain_head(admin_pool, ws), await row_counts(admin_pool, ws)
    figures.add(SECTION, "raw hostile frames sent", sent)
    figures.add(
        SECTION, "raw hostile frames refused (parse error, nothing written)", sent - len(unexpected)
    )
    figures.add(SECTION, "gateway fuzz cases run", sent)
    figures.add(SECTION, "gateway fuzz failures", len(unexpected) + (after != before))
    assert unexpected == []
    assert after == before
