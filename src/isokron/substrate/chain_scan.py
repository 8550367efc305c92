"""The chain check run inside PostgreSQL, set-based, returning only what needs a closer look.

``isokron verify`` used to stream every event into Python and re-hash it there (~70k events/s,
bound by turning rows into Python objects). Here PostgreSQL recomputes each event's hash from its
stored columns (the same ``hivex_foundation.event_hash_input`` the append function uses, inlined),
checks each payload against its digest, and compares each event's ``prev_event_hash`` with the
stored hash of the event before it (``lag()`` over seq) — and sends back only the events where
something is wrong, plus the first and last event of each chunk. The findings are then built by
:func:`isokron.chain.report_from_suspects` with the same kinds and messages as the pure-Python walk.

The chain is scanned in chunks of ``CHUNK_EVENTS`` consecutive events (by the primary key's
order), each chunk starting at the previous chunk's last event so that every link is checked once;
the caller's ``progress`` is told after each chunk. Every chunk runs in the caller's transaction
(one snapshot).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import psycopg.sql

from isokron.chain import (
    HASH_PREFIX,
    ChainRecord,
    Checkpoint,
    Finding,
    SuspectEvent,
    VerifyReport,
    report_from_suspects,
)

CHUNK_EVENTS = 50_000
SET_SCOPE_SQL = "SELECT isokron.set_local('app.current_workspace_id', %s, true)"
# Connections the chunks run on at once (the caller's plus workers sharing its snapshot).
MAX_WORKERS = 8
# More chunks than this for one chain means its seqs are spread far apart (a forged seq near
# 2**63): the chunk bounds are then read from the events instead of stepped through.
MAX_VALUE_CHUNKS = 10_000

SELECT_SEQ_BOUNDS_SQL = """
SELECT min(seq), max(seq) FROM hivex_foundation.event_log
WHERE workspace_id = %(workspace)s AND tenant_id = %(tenant)s
"""
# Every chunk-th seq of the chain, in order: chunk bounds for a chain with far-apart seqs.
SELECT_SEQ_STEPS_SQL = """
SELECT seq FROM (
    SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM hivex_foundation.event_log
    WHERE workspace_id = %(workspace)s AND tenant_id = %(tenant)s
) s WHERE (n - 1) %% %(chunk)s = 0 ORDER BY seq
"""
EXPORT_SNAPSHOT_SQL = "SELECT pg_export_snapshot()"
# Every connection of verify and export: UTF-8 whatever the auditor's environment says
# (PGCLIENTENCODING), so payloads and state texts reach the file and the hashes as the database
# holds them (with WIN1252 an export wrote its payloads in WIN1252, and a verify with SQL_ASCII
# got bytes instead of text).
CONNECT_OPTIONS: dict[str, Any] = {"connect_timeout": 10, "client_encoding": "UTF8"}

# One chunk of the chain: the events with %(lo)s <= seq < %(hi)s, plus the event just below
# the range (its stored hash is what the chunk's first event must link to; the caller drops
# it). The inner ORDER BY reads the primary-key index in order, so the window needs no sort;
# the per-row checks are computed below the window, so it buffers no payloads.
# A row comes back when it is the chunk's first (no predecessor) or last, when its hash,
# payload digest, seq order or link is wrong, or when a checkpoint names its seq. The hash
# input is hivex_foundation.event_hash_input spelled out (docs/chain.md §4), with %(prefix)s
# the constant HASH_PREFIX and the concatenation nested to the right: measured twice as fast as
# the function's left-to-right chain, which re-copies the growing prefix at every step.
SCAN_CHAIN_CHUNK_SQL = """
SELECT s.seq, s.event_id, s.actor_id, s.event_type,
       -- an infinite occurred_at (forged) has no microsecond value: NULL, a finding not a crash
       CASE WHEN isfinite(s.occurred_at)
            THEN (extract(epoch FROM s.occurred_at) * 1000000)::bigint END,
       s.payload_digest, s.prev_event_hash, s.this_event_hash,
       s.prev_seq, s.prev_hash, s.hash_ok, s.payload_ok, s.n, s.is_last
FROM (
    SELECT c.*,
           lag(c.seq) OVER w AS prev_seq,
           lag(c.this_event_hash) OVER w AS prev_hash,
           row_number() OVER w AS n,
           lead(c.seq) OVER w IS NULL AS is_last
    FROM (
        SELECT e.seq, e.event_id, e.actor_id, e.event_type, e.occurred_at, e.payload_digest,
           e.prev_event_hash, e.this_event_hash,
           COALESCE(octet_length(e.prev_event_hash) = 32
                    AND octet_length(e.payload_digest) = 32
                    AND sha256(%(prefix)s::bytea || (e.prev_event_hash
                        || (uuid_send(e.tenant_id) || (int8send(e.seq)
                        || (uuid_send(e.event_id) || (uuid_send(e.actor_id)
                        || (int8send(CASE WHEN isfinite(e.occurred_at) THEN
                                (extract(epoch FROM e.occurred_at) * 1000000)::bigint END)
                        || (int4send(octet_length(convert_to(e.event_type, 'UTF8')))
                        || (convert_to(e.event_type, 'UTF8') || e.payload_digest))))))))
                        ) = e.this_event_hash,
                    false) AS hash_ok,
           COALESCE(e.payload_erased
                    OR sha256(convert_to(e.payload::text, 'UTF8')) = e.payload_digest,
                    false) AS payload_ok
        FROM hivex_foundation.event_log e
        -- the range, and the event just below it: its hash is what the first one links to
        WHERE e.workspace_id = %(workspace)s AND e.tenant_id = %(tenant)s
          AND e.seq >= COALESCE((SELECT max(b.seq) FROM hivex_foundation.event_log b
                               WHERE b.workspace_id = %(workspace)s
                                 AND b.tenant_id = %(tenant)s AND b.seq < %(lo)s), %(lo)s)
          AND e.seq < %(hi)s
        ORDER BY e.seq
    ) c
    WINDOW w AS (ORDER BY c.seq)
) s
WHERE s.prev_seq IS NULL OR s.is_last OR NOT s.hash_ok OR NOT s.payload_ok
   OR s.seq <> s.prev_seq + 1 OR s.prev_hash <> s.prev_event_hash
   OR s.seq = ANY(%(checkpoint_seqs)s::bigint[])
ORDER BY s.seq
"""

PAYLOAD_MISMATCH_MESSAGE = (
    "the stored payload does not match its digest — the payload was edited after it was written"
)


@dataclass(slots=True)
class _Scan:
    """What the chunks found so far."""

    suspects: list[SuspectEvent]
    bad_payloads: list[Finding]
    events: int = 0
    head: tuple[int, bytes] | None = None


def _take_row(scan: _Scan, tenant: UUID, row: tuple) -> None:
    (seq, event_id, actor_id, event_type, occurred_us, digest, prev, this, prev_seq, prev_hash,
     hash_ok, payload_ok, _n, _is_last) = row
    record = ChainRecord(
        tenant_id=tenant,
        seq=seq,
        event_id=event_id,
        actor_id=actor_id,
        event_type=event_type,
        occurred_at_us=occurred_us,
        payload_digest=bytes(digest),
        prev_event_hash=bytes(prev),
        this_event_hash=bytes(this),
    )
    scan.suspects.append(
        SuspectEvent(
            record=record,
            prev_seq=prev_seq,
            prev_hash=None if prev_hash is None else bytes(prev_hash),
            hash_ok=bool(hash_ok),
        )
    )
    if not payload_ok:
        scan.bad_payloads.append(
            Finding(
                "payload_mismatch",
                seq,
                event_id,
                f"event seq {seq} (event_id {event_id}): {PAYLOAD_MISMATCH_MESSAGE}",
            )
        )


@dataclass(frozen=True, slots=True)
class _Chunk:
    """What one chunk's statement returned: its suspects (in seq order), size and last event."""

    rows: list[tuple]
    events: int
    last: tuple[int, bytes] | None


def _chunk_bounds(
    conn: psycopg.Connection, params: dict[str, Any], chunk_events: int
) -> list[tuple[int, int]]:
    """[lo, hi) seq ranges covering the chain, each holding at most ``chunk_events`` events."""
    row = conn.execute(SELECT_SEQ_BOUNDS_SQL, params).fetchone()
    if row is None or row[0] is None:
        return []
    first, last = int(row[0]), int(row[1])
    if (last - first) // chunk_events < MAX_VALUE_CHUNKS:
        starts = list(range(first, last + 1, chunk_events))
    else:
        starts = [
            int(r[0])
            for r in conn.execute(SELECT_SEQ_STEPS_SQL, {**params, "chunk": chunk_events})
        ]
    return list(zip(starts, [*starts[1:], last + 1], strict=True))


def _run_chunk(conn: psycopg.Connection, params: dict[str, Any], lo: int, hi: int) -> _Chunk:
    """Check the events with lo <= seq < hi; drop the event below the range it also reads."""
    rows = conn.execute(SCAN_CHAIN_CHUNK_SQL, {**params, "lo": lo, "hi": hi}).fetchall()
    if not rows or rows[-1][0] < lo:
        return _Chunk([], 0, None)
    last_row = rows[-1]
    events = last_row[12]
    if rows[0][0] < lo:  # the event below the range, already checked by its own chunk
        rows, events = rows[1:], events - 1
    return _Chunk(rows, events, (last_row[0], bytes(last_row[7])))


def snapshot_workers(
    conn: psycopg.Connection, dsn: str, workspace_id: str, count: int
) -> list[psycopg.Connection]:
    """``count`` connections whose transactions see the caller's snapshot (pg_export_snapshot)."""
    row = conn.execute(EXPORT_SNAPSHOT_SQL).fetchone()
    assert row is not None
    out: list[psycopg.Connection] = []
    try:
        for _ in range(count):
            worker = psycopg.connect(dsn, **CONNECT_OPTIONS)
            out.append(worker)
            worker.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            worker.execute(
                psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(row[0]))
            )
            worker.execute(SET_SCOPE_SQL, (workspace_id,))
    except BaseException:
        for worker in out:
            worker.close()
        raise
    return out


def _run_chunks(
    conn: psycopg.Connection,
    params: dict[str, Any],
    bounds: list[tuple[int, int]],
    parallel: tuple[str, int] | None,
    progress: Callable[[int], None] | None,
) -> list[_Chunk]:
    """Run every chunk, on the caller's connection and (``parallel``: dsn, workers) on
    workers sharing its snapshot; results in chunk order, progress as chunks finish."""
    done = 0
    lock = threading.Lock()

    def report(chunk: _Chunk) -> _Chunk:
        nonlocal done
        with lock:
            done += chunk.events
            if progress is not None:
                progress(done)
        return chunk

    extra = 0 if parallel is None else min(parallel[1], len(bounds)) - 1
    if extra <= 0:
        return [report(_run_chunk(conn, params, lo, hi)) for lo, hi in bounds]
    assert parallel is not None
    workers = [conn, *snapshot_workers(conn, parallel[0], params["workspace"], extra)]
    free: queue.SimpleQueue[psycopg.Connection] = queue.SimpleQueue()
    for worker in workers:
        free.put(worker)

    def run(bound: tuple[int, int]) -> _Chunk:
        worker = free.get()
        try:
            chunk = _run_chunk(worker, params, *bound)
        finally:
            free.put(worker)
        return report(chunk)

    try:
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            return list(pool.map(run, bounds))
    finally:
        for worker in workers[1:]:
            worker.close()


def scan_workers() -> int:
    """How many connections a scan uses at once: one per CPU (up to MAX_WORKERS)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def scan_chain(
    conn: psycopg.Connection,
    tenant: UUID,
    workspace_id: str,
    *,
    checkpoints: Sequence[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
    chunk_events: int = CHUNK_EVENTS,
    parallel: tuple[str, int] | None = None,
) -> tuple[VerifyReport, list[Finding]]:
    """Verify one tenant's chain inside PostgreSQL; return the report and payload findings.

    ``chunk_events`` (at least 2) bounds the seqs one statement covers; ``progress`` gets the
    running count as chunks finish. With ``parallel`` = (dsn, n) the chunks run on up to n
    connections at once, the others opened on ``dsn`` and reading ``conn``'s snapshot (``conn``
    must be in a REPEATABLE READ transaction then).
    """
    if chunk_events < 2:
        raise ValueError(f"chunk_events must be at least 2, got {chunk_events}")
    params: dict[str, Any] = {
        "tenant": tenant,
        "workspace": workspace_id,
        "checkpoint_seqs": sorted({cp.seq for cp in checkpoints}),
        "prefix": HASH_PREFIX,
    }
    bounds = _chunk_bounds(conn, params, chunk_events)
    scan = _Scan(suspects=[], bad_payloads=[])
    for chunk in _run_chunks(conn, params, bounds, parallel, progress):
        for row in chunk.rows:
            _take_row(scan, tenant, row)
        scan.events += chunk.events
        scan.head = chunk.last or scan.head
    report = report_from_suspects(
        scan.suspects,
        tenant_id=tenant,
        events_checked=scan.events,
        head=scan.head,
        checkpoints=checkpoints,
    )
    return report, scan.bad_payloads
