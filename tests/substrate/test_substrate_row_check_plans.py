"""The row and state checks of ``isokron verify`` are planned linearly whatever the statistics.

On a freshly loaded database (no ANALYZE yet) the orphan check used to run as a nested loop
whose inner side re-read all of the workspace's events for every row: O(rows x events), over 8
minutes at 100k events. Here the statistics of every table the checks read are removed (inside
a transaction that is rolled back, as on a database autovacuum has not analyzed yet) and each
statement is planned as ``verify_workspace`` runs it. The test is structural: no nested loop may
have an inner side that reads event_log other than by a per-row index probe.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import asyncpg
import psycopg
from psycopg import sql

from isokron.chain.state import STATE_TABLES
from isokron.substrate import audit, writes
from isokron.substrate.dsn import SubstrateDSNs

# What a table looks like to the planner before its first VACUUM or ANALYZE (superuser only;
# rolled back with the test's transaction).
DROP_STATISTICS_SQL = "DELETE FROM pg_catalog.pg_statistic WHERE starelid = %s::regclass"
NEVER_ANALYZED_SQL = (
    "UPDATE pg_catalog.pg_class SET reltuples = -1, relpages = 0, relallvisible = 0 "
    "WHERE oid = %s::regclass"
)
Statement = tuple[str, Any, Any, bool]


def _tables() -> set[str]:
    names = {"hivex_foundation.event_log"} | {t.name for t in STATE_TABLES}
    return names | {f"{s}.{t}" for s, t, _ in audit.APPROVED_ROW_TABLES}


def _statements(ws: str, tenant: UUID) -> Iterator[Statement]:
    """Every statement of verify's row and state checks (label, query, parameters, and
    whether verify runs it under ``audit.linear_joins``); the chain scan is tested apart."""
    yield "charter", audit.SELECT_CHARTER_HASHES_SQL, (ws,), False
    yield "scratchpad", audit.SELECT_SCRATCHPAD_CONTENT_SQL, (ws,), False
    yield "constitution", audit.SELECT_CONSTITUTION_MISMATCH_SQL, (ws,), False
    yield "head", audit.SELECT_CHAIN_HEAD_SQL, (ws, tenant), False
    yield "orphans", audit.orphan_rows_query(), {"ws": ws, "tenant": tenant}, True
    yield "state events", audit.SELECT_STATE_EVENTS_SQL, (ws, tenant), False
    for table in STATE_TABLES:
        yield f"state {table.name}", audit.state_rows_query(table), (ws,), False


def _plan(conn: psycopg.Connection, query: Any, params: Any) -> dict[str, Any]:
    composed = sql.SQL(query) if isinstance(query, str) else query
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + composed, params).fetchone()
    assert row is not None
    return dict(row[0][0]["Plan"])


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def _rereads_event_log(inner: dict[str, Any]) -> bool:
    """The inner side of a nested loop reads event_log without probing it per outer row."""
    nodes = list(_nodes(inner))
    if not any(n.get("Relation Name") == "event_log" for n in nodes):
        return False
    return not any("event_id" in n.get("Index Cond", "") for n in nodes)


def quadratic_loops(plan: dict[str, Any]) -> list[str]:
    """The nested loops of a plan whose inner side re-reads event_log for every outer row."""
    return [
        f"{n['Node Type']} over {n['Plans'][1]['Node Type']}"
        for n in _nodes(plan)
        if n["Node Type"] == "Nested Loop" and _rereads_event_log(n["Plans"][1])
    ]


def _forget_statistics(conn: psycopg.Connection) -> None:
    for table in sorted(_tables()):
        conn.execute(DROP_STATISTICS_SQL, (table,))
        conn.execute(NEVER_ANALYZED_SQL, (table,))


async def test_row_checks_are_linear_without_statistics(
    workspace: writes.CreatedWorkspace, substrate: SubstrateDSNs
) -> None:
    ws = workspace.workspace_id
    with psycopg.connect(substrate.admin) as conn:
        try:
            _forget_statistics(conn)
            tenant = audit._tenant_of(conn, ws)
            # The trap is armed: with nested loops allowed the orphan check re-reads the chain
            # for every row.
            orphans = _plan(conn, audit.orphan_rows_query(), {"ws": ws, "tenant": tenant})
            assert quadratic_loops(orphans), (
                "the removed statistics no longer mislead the planner; this test proves nothing"
            )
            bad = {}
            for label, query, params, linear in _statements(ws, tenant):
                if linear:
                    with audit.linear_joins(conn):
                        plan = _plan(conn, query, params)
                else:
                    plan = _plan(conn, query, params)
                if loops := quadratic_loops(plan):
                    bad[label] = loops
            assert bad == {}
            # linear_joins restores the planner's setting for what follows.
            assert conn.execute(audit.SHOW_NESTLOOP_SQL).fetchone() == ("on",)
        finally:
            conn.rollback()


async def test_orphans_are_reported_in_table_order_at_most_five_a_table(
    workspace: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool
) -> None:
    """The one orphan statement keeps the former per-table findings: table order, 5 a table."""
    ws = workspace.workspace_id
    await writes.write(
        admin_pool,
        "write_scratchpad_entry",
        ws,
        workspace.actors["kora"],
        writes.scratchpad_args(kind="plan", summary="plan", content="the plan"),
    )
    async with admin_pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE kronicle.agent_scratchpad_entries SET approved_event_id = gen_random_uuid() "
            "WHERE workspace_id = $1",
            ws,
        )
    for i in range(7):
        await admin_pool.execute(
            "INSERT INTO kronicle.iso_nodes (workspace_id, node_id, node_type, title, created_by, "
            "approved_event_id) VALUES ($1, gen_random_uuid(), 'fact', $2, $3, gen_random_uuid())",
            ws,
            f"smuggled {i}",
            workspace.actors["kora"],
        )
    result = audit.verify_workspace(substrate.admin, ws)
    orphans = [f.message.split(" row ")[0] for f in result.findings if f.kind == "orphan_row"]
    assert orphans == ["kronicle.agent_scratchpad_entries"] + ["kronicle.iso_nodes"] * 5
