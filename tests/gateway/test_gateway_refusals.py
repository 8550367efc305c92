"""Every refusal, over stdio and over HTTP: a stable code, a sentence, a denial event, no write.

Bad arguments (wrong types, missing fields, 10 MB payloads, NUL bytes, lone surrogates,
1,000-deep JSON) get a clear error and nothing is written.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from gateway_harness import (
    DENIED,
    TOKEN_OF_NOBODY,
    Gateways,
    Session,
    Tenant,
    data_of,
    error_of,
    events_since,
    govern,
    head,
    issue,
    make_tenant,
    set_policy,
)

from isokron.substrate.writes import token_public_prefix

SECRET = "wsk_" + "Z9" * 20  # token-shaped: the constitution denies it


@pytest.fixture(scope="module")
async def tenant(gateways: Gateways, admin_pool: asyncpg.Pool) -> Tenant:
    """A workspace per transport (so one transport's writes do not spend the other's budget)."""
    return await make_tenant(admin_pool, f"refuse-{gateways.transport}")


@pytest.fixture(scope="module")
async def other(admin_pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(admin_pool, "other")


async def assert_denied(
    admin_pool: asyncpg.Pool, tenant: Tenant, since: int, tool: str, code: str, actor: str = "kora"
) -> dict[str, Any]:
    """Exactly one event was appended since ``since``: the denial of ``tool`` with ``code``."""
    events = await events_since(admin_pool, tenant.workspace_id, since)
    assert [e["event_type"] for e in events] == [DENIED], events
    payload = events[0]["payload"]
    assert payload["tool"] == tool and payload["code"] == code
    assert events[0]["actor_id"] == tenant.actors[actor]
    return payload


def messages_of(exc: BaseException) -> list[str]:
    """Every message in an exception (group) tree."""
    found = [str(exc)]
    for inner in getattr(exc, "exceptions", ()):
        found.extend(messages_of(inner))
    if exc.__cause__ is not None:
        found.extend(messages_of(exc.__cause__))
    return found


# -------------------------------------------------------------------------- unauthenticated


async def _bad_token(case: str, admin_pool: asyncpg.Pool, tenant: Tenant) -> str | None:
    if case == "missing":
        return None
    if case == "malformed":
        return "wsk_short"
    if case == "unknown":
        return TOKEN_OF_NOBODY
    if case == "expired":
        return (await issue(admin_pool, tenant, "kora", expires_in=timedelta(minutes=-1))).token
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("missing", "No service token was given"),
        ("malformed", "malformed"),
        ("unknown", "not known"),
        ("expired", "has expired"),
    ],
)
async def test_bad_tokens_are_refused_unauthenticated(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool, case: str, words: str
) -> None:
    token = await _bad_token(case, admin_pool, tenant)
    before = await head(admin_pool, tenant.workspace_id)
    if gateways.transport == "stdio":
        # The server starts, and refuses every call with a clean tool error.
        session = await gateways.session(token)
        error = error_of(
            await session.call("kora__append_event", {"event_type": "kora.note.recorded"})
        )
        assert error["code"] == "unauthenticated"
        assert words in error["message"]
    else:
        # HTTP 401 with the reason as a JSON-RPC error, which the client raises.
        with pytest.raises(BaseException) as raised:
            await Session(gateways.connector(token)).open()
        assert any(
            m.startswith("[unauthenticated]") and words in m for m in messages_of(raised.value)
        ), messages_of(raised.value)
    assert await head(admin_pool, tenant.workspace_id) == before


async def test_revoked_token_is_refused_on_its_next_call(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    issued = await issue(admin_pool, tenant, "kora")
    session = await Session(gateways.connector(issued.token)).open()
    try:
        data_of(await session.call("kora__append_event", {"event_type": "kora.note.recorded"}))
        await govern(admin_pool, tenant, "revoke_token", {"token_id": str(issued.token_id)})
        before = await head(admin_pool, tenant.workspace_id)
        if gateways.transport == "stdio":
            error = error_of(
                await session.call("kora__append_event", {"event_type": "kora.note.recorded"})
            )
            assert error["code"] == "unauthenticated"
            assert "was revoked" in error["message"]
            assert issued.token_prefix in error["message"]
        else:
            with pytest.raises(Exception) as raised:
                await session.call("kora__append_event", {"event_type": "kora.note.recorded"})
            assert "[unauthenticated]" in str(raised.value)
            assert "was revoked" in str(raised.value)
        assert await head(admin_pool, tenant.workspace_id) == before
    finally:
        await session.close()


# ------------------------------------------------------------------ workspace, capability


async def test_token_of_one_workspace_used_on_another(
    gateways: Gateways, tenant: Tenant, other: Tenant, admin_pool: asyncpg.Pool
) -> None:
    session = await gateways.session(tenant.kora_token)
    before, before_other = (
        await head(admin_pool, tenant.workspace_id),
        await head(admin_pool, other.workspace_id),
    )
    error = error_of(
        await session.call(
            "iso_node_create",
            {"node_type": "fact", "title": "intrusion", "workspace_id": other.workspace_id},
        )
    )
    assert error["code"] == "workspace_mismatch"
    assert other.workspace_id in error["message"]
    payload = await assert_denied(
        admin_pool, tenant, before, "iso_node_create", "workspace_mismatch"
    )
    assert str(payload.get("reason", "")).startswith("This token belongs to workspace")
    assert error["denial_event_id"]
    # Reads are refused too, and nothing at all reaches the other workspace's chain.
    read = error_of(
        await session.call("iso_node_search", {"query": "x", "workspace_id": other.workspace_id})
    )
    assert read["code"] == "workspace_mismatch"
    assert await head(admin_pool, other.workspace_id) == before_other


async def test_capability_denied_fails_closed(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    session = await gateways.session(tenant.kora_token)
    before = await head(admin_pool, tenant.workspace_id)
    error = error_of(
        await session.call(
            "kora__decide_escalation",
            {"escalation_id": str(uuid.uuid4()), "decision": "approved"},
        )
    )
    assert error["code"] == "capability_denied"
    assert "cap_decide_escalation" in error["message"]
    await assert_denied(admin_pool, tenant, before, "kora__decide_escalation", "capability_denied")


async def test_revoked_capability_applies_to_the_next_call(
    gateways: Gateways, admin_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(admin_pool, "nocap")
    session = await Session(gateways.connector(tenant.kora_token)).open()
    try:
        data_of(await session.call("iso_node_search", {}))
        await govern(
            admin_pool,
            tenant,
            "set_capabilities",
            {
                "capabilities": [
                    {"cap_name": "cap_iso_node_create", "actor_kind": "kora", "granted": False},
                    {"cap_name": "cap_iso_node_read", "actor_kind": "kora", "granted": False},
                ]
            },
        )
        before = await head(admin_pool, tenant.workspace_id)
        error = error_of(await session.call("iso_node_create", {"node_type": "fact", "title": "t"}))
        assert error["code"] == "capability_denied"
        await assert_denied(admin_pool, tenant, before, "iso_node_create", "capability_denied")
        # A refused read is not chained.
        read = error_of(await session.call("iso_node_search", {}))
        assert read["code"] == "capability_denied"
        assert "denial_event_id" not in read
        assert await head(admin_pool, tenant.workspace_id) == before + 1
    finally:
        await session.close()


async def test_kill_switch_stops_kora_but_not_the_operator(
    gateways: Gateways, admin_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(admin_pool, "kill")
    kora = await Session(gateways.connector(tenant.kora_token)).open()
    operator = await Session(gateways.connector(tenant.operator_token)).open()
    try:
        await set_policy(admin_pool, tenant, "policy.kora_disabled", True)
        before = await head(admin_pool, tenant.workspace_id)
        error = error_of(
            await kora.call("kora__append_event", {"event_type": "kora.note.recorded"})
        )
        assert error["code"] == "kill_switch"
        assert "policy.kora_disabled" in error["message"]
        await assert_denied(admin_pool, tenant, before, "kora__append_event", "kill_switch")
        assert error_of(await kora.call("kora__read_kora_capability_row"))["code"] == "kill_switch"
        data_of(await operator.call("kora__append_event", {"event_type": "operator.note.recorded"}))
        await set_policy(admin_pool, tenant, "policy.kora_disabled", False)
        data_of(await kora.call("kora__append_event", {"event_type": "kora.note.recorded"}))
    finally:
        await kora.close()
        await operator.close()


# -------------------------------------------------------------------------------- sizes


async def test_three_megabyte_payload_is_too_large(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    session = await gateways.session(tenant.kora_token)
    before = await head(admin_pool, tenant.workspace_id)
    error = error_of(
        await session.call(
            "kora__append_event",
            {"event_type": "kora.note.recorded", "payload": {"blob": "x" * (3 * 1024 * 1024)}},
        )
    )
    assert error["code"] == "too_large"
    assert "policy.kora_max_payload_bytes" in error["message"]
    await assert_denied(admin_pool, tenant, before, "kora__append_event", "too_large")


@pytest.mark.parametrize(
    ("arguments", "policy"),
    [
        (
            {"kind": "plan", "summary": "big", "content": "y" * (256 * 1024 + 1)},
            "policy.kora_max_scratchpad_content_bytes",
        ),
        (
            {"kind": "plan", "summary": "s" * 2049, "content": "small"},
            "policy.kora_max_summary_bytes",
        ),
    ],
    ids=["content", "summary"],
)
async def test_scratchpad_caps(
    gateways: Gateways,
    tenant: Tenant,
    admin_pool: asyncpg.Pool,
    arguments: dict[str, Any],
    policy: str,
) -> None:
    session = await gateways.session(tenant.kora_token)
    before = await head(admin_pool, tenant.workspace_id)
    error = error_of(await session.call("kora__write_agent_scratchpad", arguments))
    assert error["code"] == "too_large"
    assert policy in error["message"]
    await assert_denied(admin_pool, tenant, before, "kora__write_agent_scratchpad", "too_large")


async def test_inline_content_is_not_held_to_the_payload_cap(
    gateways: Gateways, tenant: Tenant
) -> None:
    session = await gateways.session(tenant.kora_token)
    content = "z" * (100 * 1024)  # over the 64 KiB payload cap, under the 256 KiB content cap
    data_of(
        await session.call(
            "kora__write_agent_scratchpad",
            {"kind": "tool_result", "summary": "s", "content": content},
        )
    )


# ------------------------------------------------------------------------- constitution


async def test_secret_shaped_content_is_denied_and_never_echoed(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    session = await gateways.session(tenant.kora_token)
    before = await head(admin_pool, tenant.workspace_id)
    error = error_of(
        await session.call(
            "iso_node_create",
            {"node_type": "fact", "title": "creds", "content": f"the key is {SECRET}"},
        )
    )
    assert error["code"] == "constitution_denied"
    assert error["rule_id"] == "deny-secret-wsk"
    assert SECRET not in error["message"]
    payload = await assert_denied(
        admin_pool, tenant, before, "iso_node_create", "constitution_denied"
    )
    assert payload["rule_id"] == "deny-secret-wsk"
    assert SECRET not in str(payload)


async def test_reserved_event_types_are_denied(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    session = await gateways.session(tenant.kora_token)
    before = await head(admin_pool, tenant.workspace_id)
    error = error_of(
        await session.call("kora__append_event", {"event_type": "governance.charter.set"})
    )
    assert error["code"] == "constitution_denied"
    assert error["rule_id"] == "deny-governance-events"
    await assert_denied(admin_pool, tenant, before, "kora__append_event", "constitution_denied")


# ---------------------------------------------------------------------------- arguments

DEEP_1000 = '{"a":' * 1000 + "{}" + "}" * 1000
DEEP_200 = '{"a":' * 200 + "{}" + "}" * 200

BAD_ARGUMENTS = [
    ("wrong-type", "kora__append_event", {"event_type": 5}, "event_type"),
    ("missing-field", "iso_node_create", {"node_type": "fact"}, "title: Field required"),
    (
        "unknown-argument",
        "iso_node_create",
        {"node_type": "f", "title": "t", "tilte": "x"},
        "tilte",
    ),
    (
        "bad-enum",
        "kora__write_agent_scratchpad",
        {"kind": "diary", "summary": "s", "content": "c"},
        "kind",
    ),
    ("bad-uuid", "iso_node_supersede", {"node_id": "not-a-uuid"}, "node_id"),
    ("nul-byte", "iso_node_create", {"node_type": "fact", "title": "a\x00b"}, "NUL"),
    (
        "nul-in-json",
        "kora__append_event",
        {"event_type": "kora.a.b", "payload": {"k": "\x00"}},
        "NUL",
    ),
    (
        "surrogate",
        "kora__append_event",
        {"event_type": "kora.a.b", "payload": '{"k": "\\ud800"}'},
        "surrogate",
    ),
    ("deep-1000", "kora__append_event", {"event_type": "kora.a.b", "payload": DEEP_1000}, "deep"),
    ("deep-200", "kora__append_event", {"event_type": "kora.a.b", "payload": DEEP_200}, "deeper"),
    (
        "hash-mismatch",
        "kora__write_agent_scratchpad",
        {"kind": "plan", "summary": "s", "content": "c", "content_hash": "0" * 64},
        "content_hash",
    ),
    (
        "uri-without-hash",
        "kora__write_agent_scratchpad",
        {"kind": "plan", "summary": "s", "content_uri": "s3://x"},
        "content_hash",
    ),
    ("substrate-check", "kora__append_event", {"event_type": "Not Dotted"}, "dotted lower-case"),
]


@pytest.mark.parametrize(
    ("tool", "arguments", "words"),
    [case[1:] for case in BAD_ARGUMENTS],
    ids=[case[0] for case in BAD_ARGUMENTS],
)
async def test_bad_arguments_are_refused_with_nothing_written(
    gateways: Gateways,
    tenant: Tenant,
    admin_pool: asyncpg.Pool,
    tool: str,
    arguments: dict[str, Any],
    words: str,
) -> None:
    session = await gateways.session(tenant.kora_token)
    before = await head(admin_pool, tenant.workspace_id)
    error = error_of(await session.call(tool, arguments))
    assert error["code"] == "invalid_argument", error
    assert words in error["message"], error["message"]
    await assert_denied(admin_pool, tenant, before, tool, "invalid_argument")


async def test_lone_surrogate_never_leaves_the_official_client(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    before = await head(admin_pool, tenant.workspace_id)
    with pytest.raises(BaseException) as raised:
        async with gateways.connector(tenant.kora_token)() as client:
            await client.call_tool(
                "kora__append_event", {"event_type": "kora.a.b", "payload": {"k": "\ud800"}}
            )
    assert any("surrogates not allowed" in m for m in messages_of(raised.value))
    assert await head(admin_pool, tenant.workspace_id) == before


# ------------------------------------------------------------------ substrate refusals


async def test_not_found_and_conflict(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    session = await gateways.session(tenant.kora_token)
    missing = str(uuid.uuid4())
    assert error_of(await session.call("iso_node_get", {"node_id": missing}))["code"] == "not_found"
    before = await head(admin_pool, tenant.workspace_id)
    error = error_of(await session.call("iso_node_supersede", {"node_id": missing}))
    assert error["code"] == "not_found"
    assert missing in error["message"]
    await assert_denied(admin_pool, tenant, before, "iso_node_supersede", "not_found")

    node = data_of(await session.call("iso_node_create", {"node_type": "fact", "title": "v1"}))
    data_of(await session.call("iso_node_supersede", {"node_id": node["node_id"]}))
    before = await head(admin_pool, tenant.workspace_id)
    again = error_of(await session.call("iso_node_supersede", {"node_id": node["node_id"]}))
    assert again["code"] == "conflict"
    assert "already superseded" in again["message"]
    await assert_denied(admin_pool, tenant, before, "iso_node_supersede", "conflict")


# ------------------------------------------------------------------------------- logging


async def test_tokens_are_never_logged_beyond_their_prefix(
    gateways: Gateways, tenant: Tenant
) -> None:
    """Runs last in the module: the gateway's log now holds every decision made above."""
    log = gateways.log_text()
    assert "[isokron.gateway.decision]" in log
    assert token_public_prefix(tenant.kora_token) in log
    for token in (tenant.kora_token, tenant.operator_token, TOKEN_OF_NOBODY, SECRET):
        assert token not in log
        assert token[len(token_public_prefix(token)) :] not in log
