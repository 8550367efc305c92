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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import psycopg

from isokron.chain import (
    HASH_PREFIX,
    ChainRecord,
    Checkpoint,
    Finding,
    SuspectEvent,
    VerifyReport,
    report_from_suspects,
)

CHUNK_EVENTS = 100_000

# One chunk of the chain: events with seq >= %(start)s, at most %(limit)s of them. The inner
# ORDER BY/LIMIT reads the primary-key index in order, so the window needs no sort. A row comes
# back when it is the chunk's first (no predecessor in the chunk) or last, when its hash, payload
# digest, seq order or link is wrong, or when a checkpoint names its seq. The hash input is
# hivex_foundation.event_hash_input spelled out (docs/chain.md §2), with %(prefix)s the constant
# HASH_PREFIX and the concatenation nested to the right: measured twice as fast as the
# function's left-to-right chain, which re-copies the growing prefix at every step.
SCAN_CHAIN_CHUNK_SQL = """
SELECT s.seq, s.event_id, s.actor_id, s.event_type,
       -- an infinite occurred_at (forged) has no microsecond value: NULL, a finding not a crash
       CASE WHEN isfinite(s.occurred_at)
            THEN (extract(epoch FROM s.occurred_at) * 1000000)::bigint END,
       s.payload_digest, s.prev_event_hash, s.this_event_hash,
       s.prev_seq, s.prev_hash, s.hash_ok, s.payload_ok, s.n, s.is_last
FROM (
    SELECT c.seq, c.event_id, c.actor_id, c.event_type, c.occurred_at, c.payload_digest,
           c.prev_event_hash, c.this_event_hash,
           lag(c.seq) OVER w AS prev_seq,
           lag(c.this_event_hash) OVER w AS prev_hash,
           row_number() OVER w AS n,
           lead(c.seq) OVER w IS NULL AS is_last,
           COALESCE(octet_length(c.prev_event_hash) = 32
                    AND octet_length(c.payload_digest) = 32
                    AND sha256(%(prefix)s::bytea || (c.prev_event_hash
                        || (uuid_send(c.tenant_id) || (int8send(c.seq)
                        || (uuid_send(c.event_id) || (uuid_send(c.actor_id)
                        || (int8send(CASE WHEN isfinite(c.occurred_at) THEN
                                (extract(epoch FROM c.occurred_at) * 1000000)::bigint END)
                        || (int4send(octet_length(convert_to(c.event_type, 'UTF8')))
                        || (convert_to(c.event_type, 'UTF8') || c.payload_digest))))))))
                        ) = c.this_event_hash,
                    false) AS hash_ok,
           COALESCE(c.payload_erased
                    OR sha256(convert_to(c.payload::text, 'UTF8')) = c.payload_digest,
                    false) AS payload_ok
    FROM (
        SELECT * FROM hivex_foundation.event_log
        WHERE workspace_id = %(workspace)s AND tenant_id = %(tenant)s AND seq >= %(start)s
        ORDER BY seq
        LIMIT %(limit)s
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
     hash_ok, payload_ok, _n, is_last) = row
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
    if is_last:
        scan.head = (seq, record.this_event_hash)


def scan_chain(
    conn: psycopg.Connection,
    tenant: UUID,
    workspace_id: str,
    *,
    checkpoints: Sequence[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
    chunk_events: int = CHUNK_EVENTS,
) -> tuple[VerifyReport, list[Finding]]:
    """Verify one tenant's chain inside PostgreSQL; return the report and payload findings.

    ``chunk_events`` (at least 2: each chunk after the first re-reads one event) bounds the
    events one statement covers; ``progress`` gets the running count after each chunk.
    """
    if chunk_events < 2:
        raise ValueError(f"chunk_events must be at least 2, got {chunk_events}")
    scan = _Scan(suspects=[], bad_payloads=[])
    cp_seqs = sorted({cp.seq for cp in checkpoints})
    start, first_chunk = 0, True
    while True:
        rows = conn.execute(
            SCAN_CHAIN_CHUNK_SQL,
            {
                "tenant": tenant,
                "workspace": workspace_id,
                "start": start,
                "limit": chunk_events,
                "checkpoint_seqs": cp_seqs,
                "prefix": HASH_PREFIX,
            },
        ).fetchall()
        chunk_size = rows[-1][12] if rows else 0
        if not first_chunk:
            # The chunk's first event was the previous chunk's last, already checked there.
            rows, chunk_size = rows[1:], chunk_size - 1
        for row in rows:
            _take_row(scan, tenant, row)
        scan.events += chunk_size
        if progress is not None:
            progress(scan.events)
        if scan.head is None or not rows or chunk_size < chunk_events - (0 if first_chunk else 1):
            break
        start, first_chunk = scan.head[0], False
    report = report_from_suspects(
        scan.suspects,
        tenant_id=tenant,
        events_checked=scan.events,
        head=scan.head,
        checkpoints=checkpoints,
    )
    return report, scan.bad_payloads
