"""The in-database chain check (`chain_scan.scan_chain`) against the independent pure-Python walk
(`audit.iter_chain` + `chain.verify_records`) on the same tampered chains: the same findings,
kind, seq and message, whatever the chunk size (so no tampering hides at a chunk boundary),
chunks run one after another or on several connections at once.
Likewise the export lines PostgreSQL builds against the Python exporter's."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import asyncpg
import psycopg
import pytest

from isokron.chain import (
    Checkpoint,
    Finding,
    make_record,
    us_to_datetime,
    verify_records,
)
from isokron.chain.bundle_v3 import encode_event_line
from isokron.chain.state import STATE_TABLES
from isokron.errors import ChainError
from isokron.substrate import audit, chain_export, writes
from isokron.substrate.chain_export import copy_event_lines, copy_state_lines
from isokron.substrate.chain_scan import scan_chain
from isokron.substrate.dsn import SubstrateDSNs

EVENTS = 12  # 5 seed events of create_workspace, then 7 appended
SELECT_LAST_SQL = """
SELECT seq, this_event_hash, (extract(epoch FROM occurred_at) * 1000000)::bigint AS us
FROM hivex_foundation.event_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1
"""
INSERT_EVENT_SQL = """
INSERT INTO hivex_foundation.event_log (tenant_id, seq, event_id, actor_id, event_type, payload,
    payload_digest, occurred_at, prev_event_hash, this_event_hash, workspace_id)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10, $11)
"""
T = "hivex_foundation.event_log"
TAMPERS: dict[str, list[str]] = {
    "untouched": [],
    "edited-type": [f"UPDATE {T} SET event_type = 'kora.x' WHERE tenant_id = $1 AND seq = 7"],
    "edited-payload": [f"UPDATE {T} SET payload = '{{\"i\": 9}}' WHERE tenant_id = $1 AND seq = 9"],
    "deleted-first": [f"DELETE FROM {T} WHERE tenant_id = $1 AND seq = 1"],
    "deleted-two-apart": [f"DELETE FROM {T} WHERE tenant_id = $1 AND seq IN (4, 8, 9)"],
    "bad-genesis": [
        f"UPDATE {T} SET prev_event_hash = sha256('x'::bytea) WHERE tenant_id = $1 AND seq = 1"
    ],
    "edited-hash": [
        f"UPDATE {T} SET this_event_hash = sha256('y'::bytea) WHERE tenant_id = $1 AND seq = 6"
    ],
    "swapped": [
        f"UPDATE {T} SET seq = 1000 WHERE tenant_id = $1 AND seq = 7",
        f"UPDATE {T} SET seq = 7 WHERE tenant_id = $1 AND seq = 8",
        f"UPDATE {T} SET seq = 8 WHERE tenant_id = $1 AND seq = 1000",
    ],
    # a seq far beyond the others: the chunk bounds are then read from the events
    "far-seq": [f"UPDATE {T} SET seq = 4611686018427387904 WHERE tenant_id = $1 AND seq = 11"],
    "short-digest": [
        f"ALTER TABLE {T} DROP CONSTRAINT IF EXISTS event_log_payload_digest_check",
        f"UPDATE {T} SET payload_digest = '\\x00'::bytea WHERE tenant_id = $1 AND seq = 10",
    ],
}


@pytest.fixture
async def ws(make_workspace: Callable, admin_pool: asyncpg.Pool) -> writes.CreatedWorkspace:
    created = await make_workspace("scan")
    for i in range(EVENTS - 5):
        await writes.write(
            admin_pool,
            "append_event",
            created.workspace_id,
            created.actors["kora"],
            {"event_type": "kora.note.recorded", "payload": {"i": i}},
        )
    return created


async def _tamper(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace, sqls: list[str]) -> None:
    async with admin_pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for sql in sqls:
            await conn.execute(sql, *([ws.tenant_id] if "$1" in sql else []))


async def _forge(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace) -> None:
    """A well-sealed event appended past the head by hand (only the chain head disagrees)."""
    last = await admin_pool.fetchrow(SELECT_LAST_SQL, ws.tenant_id)
    forged = make_record(
        prev_event_hash=bytes(last["this_event_hash"]),
        tenant_id=ws.tenant_id,
        seq=last["seq"] + 1,
        event_id=uuid4(),
        actor_id=ws.actors["kora"],
        occurred_at_us=last["us"] + 1,
        event_type="kora.forged",
        payload_text='{"forged": true}',
    )
    async with admin_pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            INSERT_EVENT_SQL,
            ws.tenant_id,
            forged.seq,
            forged.event_id,
            forged.actor_id,
            forged.event_type,
            forged.payload_text,
            forged.payload_digest,
            us_to_datetime(forged.occurred_at_us),
            forged.prev_event_hash,
            forged.this_event_hash,
            ws.workspace_id,
        )


def _python_walk(dsn: str, ws_id: str, cps: list[Checkpoint]) -> tuple[Any, list[Finding]]:
    with psycopg.connect(dsn) as conn, conn.transaction():
        tenant = audit._tenant_of(conn, ws_id)
        bad: list[Finding] = []
        report = verify_records(
            audit.iter_chain(
                conn, tenant, workspace_id=ws_id, with_payloads=False, bad_payloads=bad
            ),
            expected_tenant=tenant,
            checkpoints=cps,
        )
        return report, bad


def _scan(
    dsn: str, ws_id: str, cps: list[Checkpoint], chunk: int, workers: int
) -> tuple[Any, list[Finding]]:
    seen: list[int] = []
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # workers share it
        with conn.transaction():
            tenant = audit._tenant_of(conn, ws_id)
            report, bad = scan_chain(
                conn,
                tenant,
                ws_id,
                checkpoints=cps,
                progress=seen.append,
                chunk_events=chunk,
                parallel=(dsn, workers),
            )
    assert seen == sorted(seen) and seen[-1] == report.events_checked  # progress only grows
    return report, bad


def _summary(report: Any, bad: list[Finding]) -> tuple[Any, ...]:
    return (
        report.ok,
        report.events_checked,
        report.head_seq,
        report.head_hash,
        report.problem_count,
        [(f.kind, f.seq, f.event_id, f.message) for f in report.problems],
        [(c.checkpoint, c.finding) for c in report.checkpoints],
        bad,
    )


@pytest.mark.parametrize("case", [*TAMPERS, "forged-past-head"])
async def test_scan_matches_the_python_walk_at_every_chunk_size(
    case: str,
    ws: writes.CreatedWorkspace,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
) -> None:
    last = await admin_pool.fetchrow(SELECT_LAST_SQL, ws.tenant_id)
    checkpoints = [
        Checkpoint(ws.tenant_id, 3, bytes(32)),  # a wrong hash: must be reported
        Checkpoint(ws.tenant_id, int(last["seq"]), bytes(last["this_event_hash"])),
        Checkpoint(ws.tenant_id, 500, bytes(32)),  # beyond the head
    ]
    if case == "forged-past-head":
        await _forge(admin_pool, ws)
    else:
        await _tamper(admin_pool, ws, TAMPERS[case])
    expected = _summary(*_python_walk(substrate.admin, ws.workspace_id, checkpoints))
    for chunk in (2, 3, 4, 5, 7, 100_000):
        for workers in (1, 3):  # chunks one after another, and on 3 connections at once
            got = _summary(*_scan(substrate.admin, ws.workspace_id, checkpoints, chunk, workers))
            assert got == expected, f"chunk {chunk}, {workers} workers"
    if case not in ("untouched", "forged-past-head"):  # those two leave the links intact
        # the two bad checkpoints, plus what the tampering broke
        assert expected[4] + len(expected[7]) > 2


def test_chunk_size_below_two_is_refused(substrate: SubstrateDSNs) -> None:
    with psycopg.connect(substrate.admin) as conn, pytest.raises(ValueError, match="at least 2"):
        scan_chain(conn, uuid4(), "none", chunk_events=1)


TRICKY_PAYLOADS: list[Any] = [
    {"text": "é ü 中文 😀 \u2028 \u007f"},
    {"text": 'quote " backslash \\ slash / newline \n tab \t cr \r'},
    {"text": "controls \u0001 \u001f \b \f", "n": -12.5e-7, "big": 12345678901234567890},
    {"nested": [None, True, False, {"": ""}]},
]


# Forged after the writes: no change, an event deleted (a gap), the head moved far away (a gap
# of 2^60 seqs, which must not make 2^60 / group empty groups).
CHAIN_SHAPES = {
    "contiguous": None,
    "gap": f"DELETE FROM {T} WHERE tenant_id = $1 AND seq = 7",
    "far-seq": f"UPDATE {T} SET seq = 1152921504606846976 WHERE tenant_id = $1 AND seq = "
    f"(SELECT max(seq) FROM {T} WHERE tenant_id = $1)",
}


@pytest.mark.parametrize("group", [1000, 3])
@pytest.mark.parametrize("shape", list(CHAIN_SHAPES))
async def test_exported_lines_are_what_the_python_exporter_writes(
    ws: writes.CreatedWorkspace,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    shape: str,
    group: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database builds the export's version-3 event lines (COPY); they must equal, byte for
    byte, what encode_event_line writes for the same events (erased one, escapes too), in
    groups of any size, over a contiguous chain (groups read by seq) or one with gaps."""
    monkeypatch.setattr(chain_export, "EVENTS_PER_ROW", group)
    for payload in TRICKY_PAYLOADS:
        await writes.write(
            admin_pool,
            "append_event",
            ws.workspace_id,
            ws.actors["kora"],
            {"event_type": "kora.tricky.payload", "payload": payload},
        )
    async with admin_pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            f"UPDATE {T} SET payload_erased = true WHERE tenant_id = $1 AND seq = 3", ws.tenant_id
        )
        await conn.execute(  # a forged type with characters JSON must escape
            f"UPDATE {T} SET event_type = $2 WHERE tenant_id = $1 AND seq = 4",
            ws.tenant_id,
            'kora."é\\\n\u0002',
        )
        if CHAIN_SHAPES[shape] is not None:
            await conn.execute(CHAIN_SHAPES[shape], ws.tenant_id)
    with psycopg.connect(substrate.admin) as conn, conn.transaction():
        tenant = audit._tenant_of(conn, ws.workspace_id)
        spool = io.BytesIO()
        count, head_seq, head_hash = copy_event_lines(conn, tenant, ws.workspace_id, spool)
        records = list(
            audit.iter_chain(conn, tenant, workspace_id=ws.workspace_id, with_payloads=True)
        )
    assert count == len(records) == EVENTS + len(TRICKY_PAYLOADS) - (shape == "gap")
    assert (head_seq, head_hash) == (records[-1].seq, records[-1].this_event_hash)
    assert spool.getvalue() == b"".join(encode_event_line(r) for r in records)


# Hashes and digests of another length are refused by the table's CHECK constraints (a
# superuser would have to drop them first); an infinite time is not.
@pytest.mark.parametrize("forgery", ["occurred_at = 'infinity'", "occurred_at = '-infinity'"])
async def test_an_event_the_lines_cannot_carry_is_refused(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool, forgery: str
) -> None:
    """A hash or digest that is not 32 bytes, or a time without a microsecond value, has no
    version-3 line: the export names the event and writes nothing."""
    async with admin_pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            f"UPDATE {T} SET {forgery} WHERE tenant_id = $1 AND seq = 4", ws.tenant_id
        )
    with psycopg.connect(substrate.admin) as conn, conn.transaction():
        tenant = audit._tenant_of(conn, ws.workspace_id)
        spool = io.BytesIO()
        with pytest.raises(ChainError, match="event seq 4: a hash or digest is not 32 bytes"):
            copy_event_lines(conn, tenant, ws.workspace_id, spool)
    assert spool.getvalue() == b""


async def test_exported_state_lines_are_the_state_rows(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool
) -> None:
    """The database builds the export's state lines (COPY, JSON per row); parsed, they are the
    rows iter_state_rows reads, texts with every kind of escape included."""
    for i, payload in enumerate(TRICKY_PAYLOADS):
        text = json.dumps(payload, ensure_ascii=False)
        await writes.write(
            admin_pool,
            "write_scratchpad_entry",
            ws.workspace_id,
            ws.actors["kora"],
            writes.scratchpad_args(kind="observation", summary=f"tricky {i} {text}", content=text),
        )
    with psycopg.connect(substrate.admin) as conn, conn.transaction():
        audit._tenant_of(conn, ws.workspace_id)
        spool = io.BytesIO()
        count = copy_state_lines(conn, ws.workspace_id, spool)
        expected = sorted(
            [table.name, key, values]
            for table in STATE_TABLES
            for key, values in audit.iter_state_rows(conn, table, ws.workspace_id)
        )
    got = sorted(
        [obj["state_table"], obj["key"], obj["values"]]
        for obj in map(json.loads, spool.getvalue().splitlines())
    )
    assert count == len(got) == len(expected) and got == expected
    assert any("backslash" in str(row) for row in got)


def _copy_binary(rows: list[bytes]) -> bytes:
    """COPY's binary format of one-column rows (header, rows, trailer)."""
    body = b"".join(b"\x00\x01" + len(r).to_bytes(4, "big") + r for r in rows)
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + body + b"\xff\xff"


def test_event_rows_out_of_order_fail_the_export() -> None:
    """The export relies on the groups coming in seq order; if they ever did not, it must
    fail rather than write a bundle whose lines are out of order."""
    from isokron.chain import GENESIS_HASH, make_record

    records, prev = [], GENESIS_HASH
    for seq in range(1, 5):
        record = make_record(
            prev_event_hash=prev,
            tenant_id=uuid4(),
            seq=seq,
            event_id=uuid4(),
            actor_id=uuid4(),
            occurred_at_us=seq,
            event_type="kora.x",
            payload_text="{}",
        )
        records.append(record)
        prev = record.this_event_hash
    lines = [encode_event_line(r) for r in records]
    in_order = chain_export._BinaryRows(io.BytesIO())
    in_order.add(_copy_binary([lines[0] + lines[1], lines[2] + lines[3]]))
    assert in_order.finish() == 4 and in_order.last_seq == 4
    swapped = chain_export._BinaryRows(io.BytesIO())
    with pytest.raises(ChainError, match="out of order"):
        swapped.add(_copy_binary([lines[2] + lines[3], lines[0] + lines[1]]))
