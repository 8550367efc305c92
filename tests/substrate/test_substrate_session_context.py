"""The session context in one statement (isokron.session_context, migration 0070): the same
parts as the single reads, under row-level security with invoker rights, for the reader role
only, failing closed on rows the chain does not vouch for."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import psycopg
import pytest

from isokron.errors import (
    GovernanceIntegrityError,
    IdentityError,
    RoleCharterIntegrityError,
)
from isokron.substrate import connection, reads, writes
from isokron.substrate.dsn import SubstrateDSNs

PROC_SQL = """
SELECT p.prosecdef, p.provolatile, has_function_privilege($1, p.oid, 'EXECUTE') AS reader_may,
       has_function_privilege($2, p.oid, 'EXECUTE') AS gateway_may
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'isokron' AND p.proname = 'session_context'
"""


async def _seed(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace, tag: str) -> None:
    """Own entries, another actor's shared and private entries, and events (each write in its
    own transaction, so every entry has its own created_at)."""
    for i in range(3):
        await writes.write(
            admin_pool,
            "write_scratchpad_entry",
            ws.workspace_id,
            ws.actors["kora"],
            writes.scratchpad_args(
                kind="plan",
                summary=f"{tag} mine {i}",
                content=f"m{i}",
                visibility_scope="cross_agent_dereferenceable" if i == 1 else "own_only",
            ),
        )
    for scope in ("cross_agent_dereferenceable", "own_only"):
        await writes.write(
            admin_pool,
            "write_scratchpad_entry",
            ws.workspace_id,
            ws.actors["claude_pm"],
            writes.scratchpad_args(
                kind="handoff_note",
                summary=f"{tag} pm {scope}",
                content="h",
                visibility_scope=scope,
            ),
        )
    await writes.write(
        admin_pool,
        "append_event",
        ws.workspace_id,
        ws.actors["kora"],
        {"event_type": f"kora.{tag}.noted", "payload": {"note": "x" * 400}},
    )


async def _single_reads(pool: asyncpg.Pool, ws_id: str) -> list[object]:
    async def attempt(read: Callable[[], object]) -> object:
        try:
            return await read()  # type: ignore[misc]
        except IdentityError as exc:
            return (type(exc), str(exc))

    return [
        await attempt(lambda: reads.read_active_role_charter(pool, ws_id)),
        await attempt(lambda: reads.read_policy_registry(pool, ws_id)),
        await attempt(lambda: reads.read_capability_row(pool, ws_id, "kora")),
        await reads.read_own_scratchpad(pool, ws_id),
        await reads.read_cross_agent_scratchpad(pool, ws_id),
        await reads.read_recent_events(pool, ws_id),
        await reads.read_active_constitution(pool, ws_id),
    ]


def _parts(p: reads.SessionParts) -> list[object]:
    def plain(v: object) -> object:
        return (type(v), str(v)) if isinstance(v, IdentityError) else v

    return [
        plain(p.charter),
        plain(p.policies),
        plain(p.capabilities),
        p.own_scratchpad,
        p.cross_agent_scratchpad,
        p.recent_events,
        p.constitution,
    ]


async def test_one_statement_returns_what_the_single_reads_return(
    make_workspace: Callable, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    ws = await make_workspace("one-stmt")
    other = await make_workspace("one-stmt-other")
    await _seed(admin_pool, ws, "here")
    await _seed(admin_pool, other, "there")

    parts = await reads.read_session_parts(reader_pool, ws.workspace_id)

    assert _parts(parts) == await _single_reads(reader_pool, ws.workspace_id)
    assert [e.summary for e in parts.own_scratchpad] == [
        "here mine 2",
        "here mine 1",
        "here mine 0",
    ]
    assert [e.summary for e in parts.cross_agent_scratchpad] == [
        "here pm cross_agent_dereferenceable"
    ]
    assert parts.recent_events[0].event_type == "kora.here.noted"
    assert parts.recent_events[0].payload_excerpt.endswith("…")
    # Another workspace's rows never appear.
    shown = {e.summary.split()[0] for e in (*parts.own_scratchpad, *parts.cross_agent_scratchpad)}
    assert shown == {"here"}
    assert not any("there" in e.event_type for e in parts.recent_events)


async def test_the_statement_scopes_itself_and_leaves_nothing_scoped(
    workspace: writes.CreatedWorkspace, substrate: SubstrateDSNs
) -> None:
    conn = await connection.connect(substrate.reader)
    try:
        parts = await reads.read_session_parts(conn, workspace.workspace_id)
        assert not isinstance(parts.policies, IdentityError) and len(parts.policies) == 31
        # The workspace was set for the statement's transaction only: RLS shows nothing now.
        assert await conn.fetchval("SELECT count(*) FROM public.kora_policy_registry") == 0
        assert await conn.fetchval("SELECT current_setting('app.current_workspace_id', true)") in (
            None,
            "",
        )
    finally:
        await conn.close()


def test_invoker_rights_stable_and_the_reader_role_only(substrate: SubstrateDSNs) -> None:
    from urllib.parse import urlsplit

    reader = urlsplit(substrate.reader).username
    gateway = urlsplit(substrate.gateway).username
    with psycopg.connect(substrate.admin) as conn:
        row = conn.execute(PROC_SQL.replace("$1", "%s").replace("$2", "%s"), (reader, gateway))
        secdef, volatility, reader_may, gateway_may = row.fetchone()  # type: ignore[misc]
    assert (secdef, volatility, reader_may, gateway_may) == (False, "s", True, False)


def test_its_statements_are_planned_once_per_connection(substrate: SubstrateDSNs) -> None:
    """0070: generic plans (a custom plan per call was most of the statement's server time)."""
    with psycopg.connect(substrate.admin) as conn:
        row = conn.execute(
            "SELECT p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'isokron' AND p.proname = 'session_context'"
        ).fetchone()
    assert row is not None
    assert {"plan_cache_mode=force_generic_plan", "jit=off"} <= set(row[0])


async def test_the_gateway_role_may_not_call_it(
    workspace: writes.CreatedWorkspace, substrate: SubstrateDSNs
) -> None:
    conn = await connection.connect(substrate.gateway)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchrow(
                reads.SESSION_CONTEXT_SQL, workspace.workspace_id, "kora", 10, 10, False
            )
    finally:
        await conn.close()


def _tamper(dsn: str, sql: str, ws_id: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
        conn.execute("SET LOCAL session_replication_role = replica")  # no triggers, no FKs
        conn.execute(sql, {"ws": ws_id})


@pytest.mark.parametrize(
    ("sql", "part", "error"),
    [
        (
            "UPDATE public.kora_role_charter SET content_md = 'x', "
            "content_hash = encode(sha256('x'), 'hex') WHERE workspace_id = %(ws)s",
            "charter",
            RoleCharterIntegrityError,
        ),
        (
            "UPDATE public.kora_policy_registry SET policy_value = '999999' "
            "WHERE workspace_id = %(ws)s AND policy_key = 'policy.kora_rate_limit_per_minute'",
            "policies",
            GovernanceIntegrityError,
        ),
        (
            "UPDATE public.kora_capability_matrix SET granted = true WHERE workspace_id = %(ws)s "
            "AND actor_kind = 'kora' AND cap_name = 'cap_decide_proposal'",
            "capabilities",
            GovernanceIntegrityError,
        ),
    ],
    ids=["charter", "policy", "capability"],
)
async def test_a_part_the_chain_does_not_vouch_for_is_refused(
    sql: str,
    part: str,
    error: type[Exception],
    make_workspace: Callable,
    reader_pool: asyncpg.Pool,
    substrate: SubstrateDSNs,
) -> None:
    ws = await make_workspace("one-stmt-tamper")
    before = await reads.read_session_parts(reader_pool, ws.workspace_id)
    assert not isinstance(getattr(before, part), IdentityError)
    _tamper(substrate.admin, sql, ws.workspace_id)

    after = await reads.read_session_parts(reader_pool, ws.workspace_id)

    refused = getattr(after, part)
    assert isinstance(refused, error)
    assert "chain event that approved it" in str(refused)
    assert _parts(after) == await _single_reads(reader_pool, ws.workspace_id)
    if part == "charter":
        ctx = await reads.assemble_session_context(reader_pool, ws.workspace_id)
        assert ctx.role_charter is None and ctx.identity_error == str(refused)
    else:
        with pytest.raises(error):
            await reads.assemble_session_context(reader_pool, ws.workspace_id)


async def test_read_limits_come_from_verified_policies_when_asked(
    make_workspace: Callable, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    ws = await make_workspace("one-stmt-limits")
    await _seed(admin_pool, ws, "here")
    await writes.govern(
        admin_pool,
        "set_policies",
        ws.workspace_id,
        ws.operator_actor_id,
        {
            "policies": [
                {"policy_key": "policy.kora_scratchpad_read_limit", "policy_value": 2},
                {"policy_key": "policy.kora_recent_event_read_limit", "policy_value": 1.0},
            ]
        },
    )
    by_policy = await reads.read_session_parts(
        reader_pool, ws.workspace_id, scratchpad_limit=50, event_limit=50, limits_from_policy=True
    )
    assert len(by_policy.own_scratchpad) == 2 and len(by_policy.recent_events) == 1
    given = await reads.read_session_parts(
        reader_pool, ws.workspace_id, scratchpad_limit=50, event_limit=50
    )
    assert len(given.own_scratchpad) == 3 and len(given.recent_events) > 1


async def test_recall_in_one_statement_is_the_search_of_active_nodes(
    make_workspace: Callable, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    ws = await make_workspace("recall")
    other = await make_workspace("recall-other")
    for w, title in ((ws, "durable export order"), (ws, "export retention"), (other, "export")):
        await writes.write(
            admin_pool,
            "iso_node_create",
            w.workspace_id,
            w.actors["kora"],
            {"node_type": "decision", "title": title, "content": "the export runs first"},
        )
    for query in ("export", "durable or retention", "absent"):
        recalled = await reads.recall_nodes(reader_pool, ws.workspace_id, query, limit=5)
        searched = await reads.search_iso_nodes(reader_pool, ws.workspace_id, query, limit=5)
        assert recalled == searched
    assert len(await reads.recall_nodes(reader_pool, ws.workspace_id, "export", limit=5)) == 2
    assert len(await reads.recall_nodes(reader_pool, ws.workspace_id, "export", limit=1)) == 1


async def test_a_pool_without_session_state_keeps_nothing_between_reads(
    workspace: writes.CreatedWorkspace, substrate: SubstrateDSNs
) -> None:
    pool = await connection.create_pool(
        substrate.reader, min_size=1, max_size=1, session_state=False
    )
    try:
        await reads.read_session_parts(pool, workspace.workspace_id)
        await reads.read_policy_registry(pool, workspace.workspace_id)
        await reads.recall_nodes(pool, workspace.workspace_id, "anything")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM public.kora_policy_registry") == 0
    finally:
        await pool.close()
