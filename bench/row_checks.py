"""The row and state checks of ``isokron verify`` on a freshly loaded database (no statistics).

Loads one workspace (half ``append_event``, half scratchpad entries, every item a real chained
write) into a fresh database and, right after loading — before autovacuum has analyzed the
tables — prints each row-check query's plan (EXPLAIN, no ANALYZE) and times it with a
statement timeout, then times the whole row/state phase of ``audit.verify_workspace``. Run as
``PYTHONPATH=. python -m bench.row_checks [--dsn DSN] [--events N]``; not part of the report.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from bench.preload import event_item, preload, scratchpad_item
from bench.substrate import BenchDatabase, bench_database, create_bench_workspace
from isokron.chain.state import STATE_TABLES
from isokron.substrate import audit, connection

TIMEOUT_MS = 60_000
# The orphan check as it ran before (one query per table, nested loops allowed): the baseline.
OLD_ORPHAN_SQL = (
    "SELECT {key}::text FROM {table} r WHERE r.workspace_id = %s AND NOT EXISTS ("
    "SELECT 1 FROM hivex_foundation.event_log e "
    "WHERE e.workspace_id = r.workspace_id AND e.tenant_id = %s "
    "AND e.event_id = r.approved_event_id) LIMIT 5"
)
# Autovacuum may analyze a table while the load is still running (it did on the embedded
# server): held off for the loaded tables, so that the first measurement is of a database whose
# statistics are missing, as right after a load that autovacuum has not yet got to.
AUTOVACUUM_SQL = "ALTER TABLE {} SET (autovacuum_enabled = {})"
STATS_SQL = """
SELECT s.relname, n_live_tup, last_analyze, last_autoanalyze, c.reltuples
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.relname IN ('event_log', 'agent_scratchpad_entries')
"""


async def _load(db: BenchDatabase, events: int) -> str:
    admin = await connection.connect(db.dsns.admin)
    try:
        ws = await create_bench_workspace(admin, "rowcheck")
    finally:
        await admin.close()
    pool = await connection.create_pool(db.dsns.gateway, min_size=1, max_size=2)
    try:
        half = events // 2
        await preload(pool, ws.workspace_id, ws.token, "append_event", event_item, half)
        await preload(
            pool, ws.workspace_id, ws.token, "write_scratchpad_entry", scratchpad_item, half
        )
    finally:
        await pool.close()
    return ws.workspace_id


def _queries(ws: str, tenant: Any) -> Iterator[tuple[str, Any, Any]]:
    yield "charter", audit.SELECT_CHARTER_HASHES_SQL, (ws,)
    yield "scratchpad", audit.SELECT_SCRATCHPAD_CONTENT_SQL, (ws,)
    yield "constitution", audit.SELECT_CONSTITUTION_MISMATCH_SQL, (ws,)
    yield "orphans", audit.orphan_rows_query(), {"ws": ws, "tenant": tenant}
    yield "state events", audit.SELECT_STATE_EVENTS_SQL, (ws, tenant)
    for t in STATE_TABLES:
        yield f"state {t.name}", audit.state_rows_query(t), (ws,)


def _one(conn: psycopg.Connection, label: str, query: Any, params: Any) -> bool:
    """Print the plan (EXPLAIN, no ANALYZE) and the time of one query; True if it timed out."""
    q = sql.SQL(query) if isinstance(query, str) else query
    plan = conn.execute(sql.SQL("EXPLAIN ") + q, params).fetchall()
    conn.execute("SAVEPOINT q")
    wall = time.perf_counter()
    timed_out = False
    try:
        outcome = f"{len(conn.execute(query, params).fetchall())} rows"
    except psycopg.errors.QueryCanceled:
        conn.execute("ROLLBACK TO SAVEPOINT q")
        timed_out = True
        outcome = f"TIMEOUT after {TIMEOUT_MS / 1000:.0f} s"
    print(f"== {label}: {time.perf_counter() - wall:.3f} s ({outcome})")
    if "orphan" in label or "state events" in label or label == "scratchpad":
        print("\n".join("   " + r[0] for r in plan))
    return timed_out


def _old_orphans(conn: psycopg.Connection, ws: str, tenant: Any) -> None:
    """The former per-table orphan queries, each timed (the slow one up to the timeout)."""
    for schema, table, key in audit.APPROVED_ROW_TABLES:
        query = sql.SQL(OLD_ORPHAN_SQL).format(
            key=sql.Identifier(key), table=sql.Identifier(schema, table)
        )
        _one(conn, f"old orphan {table}", query, (ws, tenant))


def _explain_and_time(conn: psycopg.Connection, ws: str, *, old: bool) -> bool:
    """Each row check as verify runs it; with ``old`` the former orphan queries first."""
    timed_out = False
    tenant = audit._tenant_of(conn, ws)
    if old:  # a timeout there is the old defect, not a reason to skip verify
        _old_orphans(conn, ws, tenant)
    for label, query, params in _queries(ws, tenant):
        if label == "orphans":
            with audit.linear_joins(conn):
                timed_out |= _one(conn, label, query, params)
        else:
            timed_out |= _one(conn, label, query, params)
    return timed_out


def _measure(db: BenchDatabase, ws: str, *, old: bool) -> None:
    with psycopg.connect(db.dsns.admin) as conn:
        for row in conn.execute(STATS_SQL):
            print("  stats:", row)
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(TIMEOUT_MS),))
        with conn.transaction():
            timed_out = _explain_and_time(conn, ws, old=old)
    if timed_out:
        print("verify_workspace skipped: a row check timed out")
        return
    for _ in range(2):
        start = time.perf_counter()
        result = audit.verify_workspace(db.dsns.admin, ws)
        print(
            f"verify_workspace: ok={result.ok} chain {result.chain_seconds:.2f} s, "
            f"rows {result.rows_seconds:.2f} s, total {time.perf_counter() - start:.2f} s"
        )


def _autovacuum(db: BenchDatabase, on: bool) -> None:
    tables = {"hivex_foundation.event_log"} | {t.name for t in STATE_TABLES}
    tables |= {f"{s}.{t}" for s, t, _ in audit.APPROVED_ROW_TABLES}
    with psycopg.connect(db.dsns.admin, autocommit=True) as conn:
        for name in sorted(tables):
            query = sql.SQL(AUTOVACUUM_SQL).format(
                sql.Identifier(*name.split(".")), sql.SQL("true" if on else "false")
            )
            conn.execute(query)


def run(dsn: str | None, events: int, *, old: bool) -> None:
    """Measure right after loading, then again after ANALYZE (an older database)."""
    with bench_database(dsn) as db:
        _autovacuum(db, False)
        start = time.perf_counter()
        ws = asyncio.run(_load(db, events))
        print(
            f"server {db.server_version}; loaded {events} items in "
            f"{time.perf_counter() - start:.1f} s"
        )
        _measure(db, ws, old=old)
        _autovacuum(db, True)
        with psycopg.connect(db.dsns.admin, autocommit=True) as conn:
            conn.execute("ANALYZE")
        print("---- after ANALYZE")
        _measure(db, ws, old=old)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--old", action="store_true", help="also time the old plans first")
    args = parser.parse_args()
    run(args.dsn, args.events, old=args.old)


if __name__ == "__main__":
    main()
