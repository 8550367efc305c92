"""Migrations: a fresh database migrates, re-running is a no-op, data survives an upgrade, and
two processes migrating the same fresh database at once both succeed with one application."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from uuid import uuid4

import psycopg
import pytest

from isokron.governance.seeds import default_seed
from isokron.substrate import audit, connection, reads, writes
from isokron.substrate.migrate import MigrationResult, migrations_dir, upgrade

ALL_MIGRATIONS = tuple(sorted(p.name.removesuffix(".sql") for p in migrations_dir().glob("*.sql")))
EXPECTED_TABLES = {
    "public.workspaces",
    "public.actor_registry",
    "public.kora_role_charter",
    "public.kora_policy_registry",
    "public.kora_capability_matrix",
    "hivex_foundation.tenant",
    "hivex_foundation.event_log",
    "hivex_foundation.chain_head",
    "kronicle.workspace_constitution_revisions",
    "kronicle.agent_scratchpad_entries",
    "kronicle.iso_nodes",
    "kronicle.iso_links",
    "kronicle.convention_proposals",
    "kronicle.policy_change_proposals",
    "kronicle.escalations",
    "isokron.service_tokens",
    "isokron.idempotency_keys",
    "isokron.quota_windows",
    "isokron.operation_registry",
    "isokron.state_tables",
}
# Tables that hold no workspace's rows (the substrate's own catalogue).
GLOBAL_TABLES = {"isokron.operation_registry", "isokron.state_tables"}
SELECT_TABLES_SQL = """
SELECT n.nspname || '.' || c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname IN ('public', 'kronicle', 'hivex_foundation', 'isokron')
  AND c.relname NOT LIKE '%yoyo%'
"""
COUNT_APPLY_LOG_SQL = (
    "SELECT migration_id, count(*) FROM _yoyo_log WHERE operation = 'apply' GROUP BY 1"
)


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute(SELECT_TABLES_SQL)}


def _apply_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(COUNT_APPLY_LOG_SQL).fetchall())


def test_the_packaged_migrations_are_numbered_and_named() -> None:
    # Migrations are append-only: numbered in increasing order (each branch of work has its
    # own range of numbers, see PLAN), each with a name, applied in order.
    assert ALL_MIGRATIONS[:6] == (
        "0001.roles-and-schemas",
        "0002.tables",
        "0003.chain",
        "0004.row-level-security",
        "0005.write-operations",
        "0006.privileges",
    )
    # Each part of the project numbers its migrations within its own range (0010-0019, 0020-..),
    # so numbers are unique and increasing, and 0001-0009 stay gap-free.
    numbers = [int(mid.split(".", 1)[0]) for mid in ALL_MIGRATIONS]
    assert numbers == sorted(set(numbers))
    assert [n for n in numbers if n < 10] == list(range(1, 10))
    assert all(re.fullmatch(r"\d{4}\.[a-z0-9-]+", mid) for mid in ALL_MIGRATIONS)


def test_fresh_database_migrates_then_rerun_applies_nothing(
    fresh_database: Callable[[], str],
) -> None:
    dsn = fresh_database()
    assert _tables(dsn) == set()
    progressed: list[str] = []

    first = upgrade(dsn, progress=progressed.append)

    assert first == MigrationResult(applied=ALL_MIGRATIONS, already_applied=())
    assert progressed == list(ALL_MIGRATIONS)
    assert _tables(dsn) == EXPECTED_TABLES | GLOBAL_TABLES

    second = upgrade(dsn, progress=progressed.append)

    assert second == MigrationResult(applied=(), already_applied=ALL_MIGRATIONS)
    assert progressed == list(ALL_MIGRATIONS)  # nothing new was reported
    assert _apply_counts(dsn) == dict.fromkeys(ALL_MIGRATIONS, 1)


@dataclass(frozen=True)
class Snapshot:
    """What a workspace holds, as far as an upgrade could damage it."""

    row_counts: dict[str, int]
    events: list[tuple[int, str, bytes, bytes]]
    head: tuple[int, bytes]
    node_titles: list[str]
    charter_hash: str
    scratchpad: list[tuple[str | None, bool]]


async def _populate(dsn: str, workspace_id: str) -> None:
    conn = await connection.connect(dsn)
    try:
        ws = await writes.create_workspace(
            conn, workspace_id, "Upgrade keeps data", seed=default_seed()
        )
        kora = ws.actors["kora"]

        async def agent(op: str, args: dict[str, object], key: str | None = None) -> dict:
            return await writes.write(conn, op, workspace_id, kora, args, idempotency_key=key)

        a = await agent("iso_node_create", {"node_type": "decision", "title": "keep"})
        b = await agent("iso_node_create", {"node_type": "fact", "title": "because"})
        await agent(
            "iso_link_create",
            {"from_node_id": b["node_id"], "to_node_id": a["node_id"], "link_type": "supports"},
        )
        await agent(
            "write_scratchpad_entry",
            writes.scratchpad_args(kind="observation", summary="s", content="kept content"),
            key="once",
        )
        await agent("propose_convention", {"title": "t", "body": "b"})
        await agent(
            "propose_policy_change",
            {"policy_key": "policy.kora_disabled", "proposed_value": True},
        )
        await agent("raise_escalation", {"tool": "t", "reason": "r"})
        await agent("append_event", {"event_type": "kora.note.kept"})
        issued = await writes.issue_token(conn, workspace_id, ws.operator_actor_id, kora)
        await conn.execute(
            "SELECT isokron_api.admit_write($1, $2::jsonb)",
            writes.token_sha256(issued.token),
            [{"bucket": "writes", "limit": 60, "window_seconds": 60}],
        )
    finally:
        await conn.close()


async def _snapshot(dsn: str, workspace_id: str) -> Snapshot:
    conn = await connection.connect(dsn)  # the admin: a superuser sees every row
    try:
        tenant = await conn.fetchval(
            "SELECT tenant_id FROM hivex_foundation.tenant WHERE clerk_org_id = $1", workspace_id
        )
        counts = {}
        for table in sorted(EXPECTED_TABLES - GLOBAL_TABLES):
            schema, name = table.split(".")
            key = {"workspaces": "id", "tenant": "clerk_org_id"}.get(name, "workspace_id")
            value: object = workspace_id
            if name in ("event_log", "chain_head"):
                key, value = "tenant_id", tenant
            counts[table] = await conn.fetchval(
                f'SELECT count(*) FROM "{schema}"."{name}" WHERE {key} = $1', value
            )
        events = await conn.fetch(
            "SELECT seq, payload::text, prev_event_hash, this_event_hash "
            "FROM hivex_foundation.event_log WHERE tenant_id = $1 ORDER BY seq",
            tenant,
        )
        head = await conn.fetchrow(
            "SELECT last_seq, last_hash FROM hivex_foundation.chain_head WHERE tenant_id = $1",
            tenant,
        )
        nodes = await reads.search_iso_nodes(conn, workspace_id)
        charter = await reads.read_active_role_charter(conn, workspace_id)
        own = await reads.read_own_scratchpad(conn, workspace_id)
        return Snapshot(
            row_counts=counts,
            events=[(r[0], r[1], bytes(r[2]), bytes(r[3])) for r in events],
            head=(head["last_seq"], bytes(head["last_hash"])),
            node_titles=[n.title for n in nodes],
            charter_hash=charter.content_hash,
            scratchpad=[(e.content, e.drifted) for e in own],
        )
    finally:
        await conn.close()


async def test_upgrade_of_a_database_that_holds_data_keeps_the_data(
    fresh_database: Callable[[], str],
) -> None:
    dsn = fresh_database()
    upgrade(dsn)
    workspace_id = f"keep-{uuid4().hex[:8]}"
    await _populate(dsn, workspace_id)
    before = await _snapshot(dsn, workspace_id)
    assert sorted(before.node_titles) == ["because", "keep"]
    assert before.scratchpad == [("kept content", False)]
    assert before.head[0] == len(before.events) == 5 + 9
    assert all(n > 0 for n in before.row_counts.values()), before.row_counts

    # A plain re-run of the upgrade on a database with data.
    assert upgrade(dsn).applied == ()
    assert await _snapshot(dsn, workspace_id) == before

    # Forget yoyo's records so that EVERY migration runs again over the existing data (a
    # database whose schema was applied by another run): the migrations must be idempotent.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM _yoyo_migration")
    assert upgrade(dsn).applied == ALL_MIGRATIONS

    assert await _snapshot(dsn, workspace_id) == before
    report = audit.verify_workspace(dsn, workspace_id)
    assert report.ok, report.to_dict()
    assert report.chain.events_checked == before.head[0]

    # And the substrate still works for new writes after the re-application.
    conn = await connection.connect(dsn)
    try:
        kora = await reads.actor_id_of_kind(conn, workspace_id, "kora")
        assert kora is not None
        result = await writes.write(
            conn, "append_event", workspace_id, kora, {"event_type": "kora.note.after"}
        )
    finally:
        await conn.close()
    assert result["seq"] == before.head[0] + 1
    assert audit.verify_workspace(dsn, workspace_id).ok


def test_concurrent_upgrades_in_threads_apply_each_migration_once(
    fresh_database: Callable[[], str],
) -> None:
    dsn = fresh_database()
    workers = 4
    barrier = threading.Barrier(workers)
    results: list[MigrationResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(upgrade(dsn))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(results) == workers
    applied = [m for r in results for m in r.applied]
    assert sorted(applied) == list(ALL_MIGRATIONS)  # each exactly once, across all workers
    for r in results:
        assert sorted(r.applied + r.already_applied) == list(ALL_MIGRATIONS)
    assert _apply_counts(dsn) == dict.fromkeys(ALL_MIGRATIONS, 1)
    assert _tables(dsn) == EXPECTED_TABLES | GLOBAL_TABLES


_MIGRATE_SCRIPT = """
import json, sys
from isokron.substrate.migrate import upgrade
print("ready", flush=True)
sys.stdin.readline()  # start together
print(json.dumps(list(upgrade(sys.argv[1]).applied)))
"""


def test_two_processes_migrating_one_fresh_database_both_succeed(
    fresh_database: Callable[[], str],
) -> None:
    dsn = fresh_database()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_SCRIPT, dsn],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    # Wait until both interpreters have imported everything, then release them together.
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=120) for p in procs]

    for p, (_, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr
    applied = [m for stdout, _ in outputs for m in json.loads(stdout.strip().splitlines()[-1])]
    assert sorted(applied) == list(ALL_MIGRATIONS)
    assert _apply_counts(dsn) == dict.fromkeys(ALL_MIGRATIONS, 1)
    assert _tables(dsn) == EXPECTED_TABLES | GLOBAL_TABLES


def test_upgrade_of_an_unreachable_server_is_a_clean_error() -> None:
    from isokron.errors import SubstrateUnavailableError

    with pytest.raises(SubstrateUnavailableError, match="cannot reach PostgreSQL"):
        upgrade("postgresql://postgres@127.0.0.1:1/nowhere")
