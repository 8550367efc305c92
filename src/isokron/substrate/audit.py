"""Verification and export of a workspace straight from the database.

``isokron verify`` re-computes the tenant's chain inside PostgreSQL from the stored fields
(:mod:`isokron.substrate.chain_scan`, findings as the pure verifier in :mod:`isokron.chain` gives
them), and checks what the chain vouches for: the chain head, the
charter's SHA-256, scratchpad BLAKE3 hashes, constitution rules hashes, that every row's
``approved_event_id`` names an event of the chain, and — through the row records events carry
(:mod:`isokron.chain.state`) — that every live row of every state table is exactly what its
latest event recorded, that no recorded row is missing, and that every erased payload was erased
by a chained erasure into the fixed tombstone form. It streams rows with a server-side cursor so
memory stays flat however long the chain is. Runs with the admin DSN.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import blake3
import psycopg
from psycopg import sql

from isokron.chain import (
    BundleHeader,
    ChainRecord,
    Checkpoint,
    Finding,
    VerifyReport,
    write_bundle,
)
from isokron.chain.state import (
    ROW_PROGRESS_EVERY,
    STATE_TABLES,
    RowProgress,
    StateLedger,
    StateTable,
    parse_payload,
)
from isokron.errors import NotFoundError, SubstrateError
from isokron.substrate.chain_export import (
    BackgroundStateLines,
    canonical_text_sql,
    copy_event_lines,
)
from isokron.substrate.chain_scan import CONNECT_OPTIONS, scan_chain, scan_workers
from isokron.substrate.database_errors import translate_connect_error

log = logging.getLogger("isokron.substrate.audit")

FETCH_BATCH = 20_000
SET_SCOPE_SQL = "SELECT isokron.set_local('app.current_workspace_id', %s, true)"
SELECT_TENANT_SQL = "SELECT tenant_id FROM hivex_foundation.tenant WHERE clerk_org_id = %s"
SELECT_HEAD_TENANT_SQL = "SELECT tenant_id FROM hivex_foundation.chain_head WHERE workspace_id = %s"
SELECT_CHAIN_SQL = """
SELECT tenant_id, seq, event_id, actor_id, event_type,
       -- an infinite occurred_at (forged) has no microsecond value: NULL, a finding not a crash
       CASE WHEN isfinite(occurred_at)
            THEN (extract(epoch FROM occurred_at) * 1000000)::bigint END AS occurred_at_us,
       payload_digest, prev_event_hash, this_event_hash,
       CASE WHEN payload_erased OR NOT %s THEN NULL ELSE payload::text END AS payload_text,
       (payload_erased OR sha256(convert_to(payload::text, 'UTF8')) = payload_digest) AS payload_ok
FROM hivex_foundation.event_log
WHERE workspace_id = %s AND tenant_id = %s
ORDER BY seq
"""
SELECT_CHAIN_HEAD_SQL = (
    "SELECT last_seq, last_hash FROM hivex_foundation.chain_head "
    "WHERE workspace_id = %s AND tenant_id = %s"
)
SELECT_CHARTER_HASHES_SQL = """
SELECT version, is_active, content_md, content_hash FROM public.kora_role_charter
WHERE workspace_id = %s ORDER BY version
"""
SELECT_SCRATCHPAD_CONTENT_SQL = """
SELECT entry_id, content, content_hash FROM kronicle.agent_scratchpad_entries
WHERE workspace_id = %s AND content_uri IS NULL
"""
SELECT_CONSTITUTION_MISMATCH_SQL = """
SELECT revision_number FROM kronicle.workspace_constitution_revisions
WHERE workspace_id = %s AND sha256(convert_to(rules::text, 'UTF8')) <> rules_hash
ORDER BY revision_number
"""
# Tables whose rows must each name the chain event that approved them.
APPROVED_ROW_TABLES: tuple[tuple[str, str, str], ...] = (
    ("public", "kora_role_charter", "charter_id"),
    ("public", "kora_policy_registry", "policy_key"),
    ("public", "kora_capability_matrix", "cap_name"),
    ("kronicle", "workspace_constitution_revisions", "revision_id"),
    ("kronicle", "agent_scratchpad_entries", "entry_id"),
    ("kronicle", "iso_nodes", "node_id"),
    ("kronicle", "iso_links", "link_id"),
    ("kronicle", "convention_proposals", "proposal_id"),
    ("kronicle", "policy_change_proposals", "proposal_id"),
    ("kronicle", "escalations", "escalation_id"),
    ("isokron", "service_tokens", "token_id"),
)


# Events that carry row records, were erased, or record an erasure (the state ledger's input).
# The JSON comes as text and is parsed by json.loads on a str: psycopg's jsonb loader parses
# bytes, detecting their encoding each time (measured: 0.55-0.70 s against 0.42-0.59 s for
# 50,007 events).
SELECT_STATE_EVENTS_SQL = """
SELECT seq, event_id::text, event_type, payload_erased,
       (CASE WHEN payload_erased THEN payload
             WHEN event_type = 'substrate.payload.erased' THEN payload
             ELSE jsonb_build_object('state', payload -> 'state') END)::text
FROM hivex_foundation.event_log
WHERE workspace_id = %s AND tenant_id = %s
  AND (payload_erased OR payload ? 'state' OR event_type = 'substrate.payload.erased')
ORDER BY seq
"""


def state_rows_query(table: StateTable) -> sql.Composed:
    """Every row of a state table in one workspace: its key text and its canonical texts."""
    key = sql.SQL(" || '/' || ").join(
        sql.SQL("r.{}::text").format(sql.Identifier(k)) for k in table.key_columns
    )
    schema, name = table.name.split(".")
    return sql.SQL("SELECT {key}, {cols} FROM {table} r WHERE r.{ws} = %s").format(
        key=key,
        cols=sql.SQL(", ").join(canonical_text_sql(c, t) for c, t in table.columns),
        table=sql.Identifier(schema, name),
        ws=sql.Identifier(table.ws_column),
    )


def _state_finding(kind: str, seq: int | None, message: str) -> Finding:
    return Finding(kind, seq, None, message)


def iter_state_rows(
    conn: psycopg.Connection, table: StateTable, workspace_id: str
) -> Iterator[tuple[str, list[str | None]]]:
    """Stream (key text, canonical texts) of one state table's rows (server-side cursor)."""
    with conn.cursor(name="isokron_state_rows") as cur:
        cur.itersize = FETCH_BATCH
        cur.execute(state_rows_query(table), (workspace_id,))
        for row in cur:
            yield str(row[0]), list(row[1:])


def _parsed(text: str | None, erased: bool) -> Any:
    """An event's JSON as the ledger takes it. Only a forged payload is NULL (the column is NOT
    NULL) or too large or deep for the parser: no records then, and a NULL tombstone is not the
    tombstone's fixed form (the chain check reports the payload itself)."""
    if text is None:
        return {} if erased else None
    return parse_payload(text)


def state_findings(
    conn: psycopg.Connection,
    workspace_id: str,
    tenant: UUID,
    progress: RowProgress | None = None,
) -> tuple[list[Finding], StateLedger]:
    """Every live row against its latest record; missing rows; unchained erasures.
    ``progress`` gets the "records" and "rows" phases (:data:`~isokron.chain.state.RowProgress`)."""
    ledger = StateLedger(progress)
    if progress is not None:
        progress("records", 0)
    with conn.cursor(name="isokron_state_events") as cur:
        cur.itersize = 500
        cur.execute(SELECT_STATE_EVENTS_SQL, (workspace_id, tenant))
        for n, (seq, event_id, event_type, erased, text) in enumerate(cur, 1):
            ledger.add_event(seq, event_id, event_type, _parsed(text, erased), erased=erased)
            if progress is not None and n % ROW_PROGRESS_EVERY == 0:
                progress("records", n)
    if progress is not None:
        progress("rows", 0)
    out: list[Finding] = []
    for table in STATE_TABLES:
        out += ledger.check_table(table, iter_state_rows(conn, table, workspace_id), _state_finding)
    out += ledger.finish(STATE_TABLES, _state_finding)
    return out, ledger


# The orphan check is an anti join of the workspace's rows against its chain. Planned from
# missing or stale statistics (a freshly loaded database, before autovacuum has analyzed it) the
# planner expects a handful of events per workspace and picks a nested loop whose inner side
# re-reads all of the workspace's events for every row: O(rows x events), over 8 minutes at 100k
# events. A hash or merge anti join reads each side once whatever the estimates, so nested loops
# are off for that statement only. verify cannot ANALYZE instead: it may run read-only or on a
# replica. One statement for all tables reads the chain's event ids once, not once per table.
SHOW_NESTLOOP_SQL = "SELECT current_setting('enable_nestloop')"
SET_NESTLOOP_SQL = "SELECT set_config('enable_nestloop', %s, true)"
ORPHAN_ROW_SQL = (
    "SELECT {n} AS t, {key}::text AS k, approved_event_id AS a FROM {table} "
    "WHERE workspace_id = %(ws)s"
)
# At most 5 rows per table (``t``: the table's index in APPROVED_ROW_TABLES), in table order.
ORPHAN_ROWS_SQL = """
SELECT t, k FROM (
    SELECT r.t, r.k, row_number() OVER (PARTITION BY r.t) AS n
    FROM ({rows}) r
    WHERE NOT EXISTS (SELECT 1 FROM hivex_foundation.event_log e
                      WHERE e.workspace_id = %(ws)s AND e.tenant_id = %(tenant)s
                        AND e.event_id = r.a)
) o
WHERE n <= 5
ORDER BY t
"""


@contextmanager
def linear_joins(conn: psycopg.Connection) -> Iterator[None]:
    """Within a transaction: plan the enclosed statements without nested loops, then restore
    the setting. (On an error the transaction aborts, and the local setting goes with it.)"""
    row = conn.execute(SHOW_NESTLOOP_SQL).fetchone()
    conn.execute(SET_NESTLOOP_SQL, ("off",))
    yield
    conn.execute(SET_NESTLOOP_SQL, (row[0] if row else "on",))


def orphan_rows_query() -> sql.Composed:
    """Rows of every APPROVED_ROW_TABLES table whose approved_event_id is missing from the
    tenant's chain, as (table index, key text); parameters ``ws`` and ``tenant``. Run it under
    :func:`linear_joins`."""
    rows = sql.SQL(" UNION ALL ").join(
        sql.SQL(ORPHAN_ROW_SQL).format(
            n=sql.Literal(n), key=sql.Identifier(key), table=sql.Identifier(schema, table)
        )
        for n, (schema, table, key) in enumerate(APPROVED_ROW_TABLES)
    )
    return sql.SQL(ORPHAN_ROWS_SQL).format(rows=rows)


@dataclass(frozen=True, slots=True)
class WorkspaceAudit:
    """The result of ``verify_workspace``: the chain report plus the row checks."""

    workspace_id: str
    chain: VerifyReport
    findings: tuple[Finding, ...] = field(default=())
    rows_checked: int = 0
    # Wall time of the chain check and of the row/state checks (reported, never asserted).
    chain_seconds: float = 0.0
    rows_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "ok": self.ok,
            "chain": self.chain.to_dict(),
            "rows_checked": self.rows_checked,
            "chain_seconds": round(self.chain_seconds, 6),
            "rows_seconds": round(self.rows_seconds, 6),
            "findings": [f.to_dict() for f in self.findings],
        }


def _connect(dsn: str, *, snapshot: bool = False) -> psycopg.Connection:
    """Connect; with ``snapshot`` every statement of a transaction sees one snapshot, so the
    chain and the rows it vouches for are read as of the same moment."""
    try:
        conn = psycopg.connect(dsn, **CONNECT_OPTIONS)
        if snapshot:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        return conn
    except psycopg.Error as exc:
        raise translate_connect_error(exc, dsn) from exc


def _tenant_of(conn: psycopg.Connection, workspace_id: str) -> UUID:
    conn.execute(SET_SCOPE_SQL, (workspace_id,))
    row = conn.execute(SELECT_TENANT_SQL, (workspace_id,)).fetchone()
    if row is None:
        # A deleted tenant row must not hide the chain: its head still names the workspace,
        # and the state check then reports the missing row.
        row = conn.execute(SELECT_HEAD_TENANT_SQL, (workspace_id,)).fetchone()
    if row is None:
        raise NotFoundError(
            f"unknown workspace {workspace_id!r}; `isokron workspace list` shows them"
        )
    return UUID(str(row[0]))


def iter_chain(
    conn: psycopg.Connection,
    tenant_id: UUID,
    *,
    workspace_id: str,
    with_payloads: bool,
    bad_payloads: list[Finding] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[ChainRecord]:
    """Stream one tenant's chain in seq order (server-side cursor, constant memory).

    With ``bad_payloads`` given, the database's own digest check of each payload (computed
    server-side) appends a ``payload_mismatch`` finding there.
    """
    with conn.cursor(name="isokron_chain") as cur:
        cur.itersize = FETCH_BATCH
        cur.execute(SELECT_CHAIN_SQL, (with_payloads, workspace_id, tenant_id))
        n = 0
        for row in cur:
            record = ChainRecord(
                tenant_id=row[0],
                seq=row[1],
                event_id=row[2],
                actor_id=row[3],
                event_type=row[4],
                occurred_at_us=row[5],
                payload_digest=bytes(row[6]),
                prev_event_hash=bytes(row[7]),
                this_event_hash=bytes(row[8]),
                payload_text=row[9],
            )
            if bad_payloads is not None and not row[10]:
                bad_payloads.append(
                    Finding(
                        "payload_mismatch",
                        record.seq,
                        record.event_id,
                        f"event seq {record.seq} (event_id {record.event_id}): "
                        "the stored payload does "
                        "not match its digest — the payload was edited after it was written",
                    )
                )
            n += 1
            if progress is not None and n % FETCH_BATCH == 0:
                progress(n)
            yield record


def verify_workspace(
    dsn: str,
    workspace_id: str,
    *,
    checkpoints: Sequence[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
    row_progress: RowProgress | None = None,
) -> WorkspaceAudit:
    """Verify a workspace's chain, the hashes of what it vouches for and every state row.

    The chain is checked inside PostgreSQL (:mod:`isokron.substrate.chain_scan`); the row and
    state checks follow in the same snapshot and are timed separately. ``progress`` gets the
    running count of events of the chain check, ``row_progress`` the phase and count of the
    row and state checks after it (:data:`~isokron.chain.state.RowProgress`).
    """
    with _connect(dsn, snapshot=True) as conn, conn.transaction():
        tenant = _tenant_of(conn, workspace_id)
        started = time.perf_counter()
        report, bad_payloads = scan_chain(
            conn,
            tenant,
            workspace_id,
            checkpoints=checkpoints,
            progress=progress,
            parallel=(dsn, scan_workers()),
        )
        chain_done = time.perf_counter()
        findings = list(bad_payloads)
        findings += _head_findings(conn, workspace_id, tenant, report)
        findings += _charter_findings(conn, workspace_id)
        findings += _scratchpad_findings(conn, workspace_id, row_progress)
        findings += _constitution_findings(conn, workspace_id)
        findings += _orphan_findings(conn, workspace_id, tenant)
        state, ledger = state_findings(conn, workspace_id, tenant, row_progress)
        findings += state
        rows_done = time.perf_counter()
    audit = WorkspaceAudit(
        workspace_id=workspace_id,
        chain=report,
        findings=tuple(findings),
        rows_checked=ledger.rows_checked,
        chain_seconds=chain_done - started,
        rows_seconds=rows_done - chain_done,
    )
    log.info(
        "[isokron.audit.verify] workspace=%s events=%d ok=%s chain_s=%.3f rows_s=%.3f",
        workspace_id,
        report.events_checked,
        audit.ok,
        audit.chain_seconds,
        audit.rows_seconds,
    )
    return audit


def _head_findings(
    conn: psycopg.Connection, workspace_id: str, tenant: UUID, report: VerifyReport
) -> list[Finding]:
    row = conn.execute(SELECT_CHAIN_HEAD_SQL, (workspace_id, tenant)).fetchone()
    head_seq, head_hash = (row[0], bytes(row[1])) if row else (0, None)
    if (report.head_seq or 0) == head_seq and (head_seq == 0 or report.head_hash == head_hash):
        return []
    return [
        Finding(
            "head_mismatch",
            report.head_seq,
            None,
            f"the chain head records seq {head_seq} but the log ends at seq "
            f"{report.head_seq or 0} — "
            "events at the end of the chain were deleted or added outside the append function",
        )
    ]


def _charter_findings(conn: psycopg.Connection, workspace_id: str) -> list[Finding]:
    out = []
    any_active = False
    for version, active, md, stored in conn.execute(SELECT_CHARTER_HASHES_SQL, (workspace_id,)):
        any_active = any_active or active
        if md is None or hashlib.sha256(md.encode("utf-8")).hexdigest() != stored:
            state = "active " if active else ""
            out.append(
                Finding(
                    "charter_mismatch",
                    None,
                    None,
                    f"{state}role charter v{version} does not match its SHA-256",
                )
            )
    if not any_active:
        # set_charter always leaves one version active; none means a change outside the chain.
        out.append(
            Finding(
                "no_active_charter",
                None,
                None,
                "the workspace has no active role charter — agents cannot verify their identity",
            )
        )
    return out


def _scratchpad_findings(
    conn: psycopg.Connection, workspace_id: str, progress: RowProgress | None
) -> list[Finding]:
    out = []
    if progress is not None:
        progress("scratchpad", 0)
    with conn.cursor(name="isokron_scratchpad") as cur:
        cur.itersize = FETCH_BATCH
        cur.execute(SELECT_SCRATCHPAD_CONTENT_SQL, (workspace_id,))
        for n, (entry_id, content, stored) in enumerate(cur, 1):
            if progress is not None and n % ROW_PROGRESS_EVERY == 0:
                progress("scratchpad", n)
            if content is not None and blake3.blake3(content.encode("utf-8")).hexdigest() != stored:
                out.append(
                    Finding(
                        "scratchpad_mismatch",
                        None,
                        None,
                        f"scratchpad entry {entry_id} does not match its BLAKE3 hash",
                    )
                )
    return out


def _constitution_findings(conn: psycopg.Connection, workspace_id: str) -> list[Finding]:
    return [
        Finding(
            "constitution_mismatch",
            None,
            None,
            f"constitution revision {n} does not match its rules_hash",
        )
        for (n,) in conn.execute(SELECT_CONSTITUTION_MISMATCH_SQL, (workspace_id,))
    ]


def _orphan_findings(conn: psycopg.Connection, workspace_id: str, tenant: UUID) -> list[Finding]:
    with linear_joins(conn):
        found = conn.execute(orphan_rows_query(), {"ws": workspace_id, "tenant": tenant}).fetchall()
    out = []
    for n, row_key in found:
        schema, table, _ = APPROVED_ROW_TABLES[n]
        out.append(
            Finding(
                "orphan_row",
                None,
                None,
                f"{schema}.{table} row {row_key} names no event of the chain — it was "
                "written outside the write operations",
            )
        )
    return out


def export_workspace(
    dsn: str, workspace_id: str, target: Any, *, progress: Callable[[int], None] | None = None
) -> BundleHeader:
    """Write the workspace's chain and its live state rows to an export bundle, version 3
    (one snapshot; see docs/chain.md §6 and §11). The event and state lines come from
    PostgreSQL (:mod:`isokron.substrate.chain_export`), the events on one connection per CPU
    and the state lines on another at the same time; ``progress`` gets the running count of
    events."""
    with _connect(dsn, snapshot=True) as conn, conn.transaction():
        tenant = _tenant_of(conn, workspace_id)
        state = BackgroundStateLines(conn, dsn, workspace_id)  # meanwhile, on its own connection
        try:
            return write_bundle(
                target,
                workspace_id=workspace_id,
                tenant_id=tenant,
                write_events=lambda spool: copy_event_lines(
                    conn,
                    tenant,
                    workspace_id,
                    spool,
                    progress=progress,
                    parallel=(dsn, scan_workers()),
                ),
                write_state=state.write_to,
            )
        finally:
            state.close()


def make_checkpoint(dsn: str, workspace_id: str) -> Checkpoint:
    """The current head of the workspace's chain, to be kept outside the database."""
    with _connect(dsn) as conn, conn.transaction():
        tenant = _tenant_of(conn, workspace_id)
        row = conn.execute(SELECT_CHAIN_HEAD_SQL, (workspace_id, tenant)).fetchone()
    if row is None or row[0] == 0:
        raise SubstrateError(f"workspace {workspace_id!r} has no events yet; nothing to checkpoint")
    return Checkpoint(tenant_id=tenant, seq=row[0], this_event_hash=bytes(row[1]))
