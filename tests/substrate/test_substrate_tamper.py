"""Tampering as a superuser is caught by `audit.verify_workspace`, which names what was done and
where. The superuser bypasses the append-only trigger with session_replication_role = replica
(the only way around it), then the verifier must still notice."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from isokron.chain import Checkpoint, make_record, us_to_datetime, verify_bundle
from isokron.errors import NoActiveRoleCharterError, RoleCharterIntegrityError
from isokron.substrate import audit, reads, writes
from isokron.substrate.dsn import SubstrateDSNs

EXTRA_EVENTS = 5
HEAD = 5 + EXTRA_EVENTS  # 5 seed events of create_workspace, then the extra ones

SELECT_ROWS_SQL = """
SELECT seq, event_id, actor_id, event_type,
       (extract(epoch FROM occurred_at) * 1000000)::bigint AS occurred_at_us,
       payload::text AS payload_text, prev_event_hash, this_event_hash
FROM hivex_foundation.event_log WHERE tenant_id = $1 ORDER BY seq
"""
INSERT_EVENT_SQL = """
INSERT INTO hivex_foundation.event_log (tenant_id, seq, event_id, actor_id, event_type, payload,
    payload_digest, occurred_at, prev_event_hash, this_event_hash, workspace_id)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10, $11)
"""


@pytest.fixture
async def ws(make_workspace: Callable, admin_pool: asyncpg.Pool) -> writes.CreatedWorkspace:
    """A fresh workspace with events 1..10 (tests here tamper): 1-5 seed the workspace, 6 writes
    a scratchpad entry, 7-10 are plain appended events that no row refers to."""
    created = await make_workspace("tamper")
    await writes.write(
        admin_pool,
        "write_scratchpad_entry",
        created.workspace_id,
        created.actors["kora"],
        writes.scratchpad_args(kind="plan", summary="plan", content="the original plan"),
    )
    for i in range(EXTRA_EVENTS - 1):
        await writes.write(
            admin_pool,
            "append_event",
            created.workspace_id,
            created.actors["kora"],
            {"event_type": "kora.note.recorded", "payload": {"i": i}},
        )
    return created


async def _tamper(admin_pool: asyncpg.Pool, sql: str, *args: Any) -> str:
    async with admin_pool.acquire() as conn, conn.transaction():
        # A superuser switches the triggers off; on Citus the setting must reach the workers,
        # where the shards' triggers fire (a placeholder setting on plain PostgreSQL).
        await conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
        await conn.execute("SET LOCAL session_replication_role = replica")
        return await conn.execute(sql, *args)


def _verify(
    substrate: SubstrateDSNs, ws: writes.CreatedWorkspace, **kw: Any
) -> audit.WorkspaceAudit:
    return audit.verify_workspace(substrate.admin, ws.workspace_id, **kw)


def _found(result: audit.WorkspaceAudit) -> list[tuple[str, int | None]]:
    return [(f.kind, f.seq) for f in (*result.chain.problems, *result.findings)]


async def test_an_untouched_workspace_verifies(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs
) -> None:
    result = _verify(substrate, ws)
    assert result.ok and _found(result) == []
    assert result.chain.events_checked == HEAD
    assert result.chain.head_seq == HEAD


async def test_edited_payload(
    ws: writes.CreatedWorkspace,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    status = await _tamper(
        admin_pool,
        "UPDATE hivex_foundation.event_log SET payload = '{\"i\": 99}' "
        "WHERE tenant_id = $1 AND seq = 7",
        ws.tenant_id,
    )
    assert status == "UPDATE 1"
    result = _verify(substrate, ws)
    assert not result.ok
    assert _found(result) == [("payload_mismatch", 7)]
    # An export carries the edited text, and the bundle verifier catches it with the file alone.
    bundle = tmp_path / "chain.jsonl"
    audit.export_workspace(substrate.admin, ws.workspace_id, bundle)
    report = verify_bundle(bundle)
    assert [(p.kind, p.seq) for p in report.problems] == [("payload_mismatch", 7)]


async def test_edited_event_type(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool
) -> None:
    await _tamper(
        admin_pool,
        "UPDATE hivex_foundation.event_log SET event_type = 'kora.note.innocent' "
        "WHERE tenant_id = $1 AND seq = 7",
        ws.tenant_id,
    )
    result = _verify(substrate, ws)
    assert _found(result) == [("hash_mismatch", 7)]
    assert result.chain.first_problem is not None and "edited" in result.chain.first_problem.message


@pytest.mark.parametrize(
    ("seq", "expected"),
    [
        (8, [("seq_gap", 9)]),
        (6, [("seq_gap", 7), ("orphan_row", None), ("state_unrecorded", None)]),
    ],
    ids=["plain-event", "event-that-approved-a-row"],
)
async def test_deleted_middle_event(
    ws: writes.CreatedWorkspace,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    seq: int,
    expected: list[tuple[str, int | None]],
) -> None:
    await _tamper(
        admin_pool,
        "DELETE FROM hivex_foundation.event_log WHERE tenant_id = $1 AND seq = $2",
        ws.tenant_id,
        seq,
    )
    result = _verify(substrate, ws)
    assert _found(result) == expected
    assert f"seq {seq} is missing" in result.chain.problems[0].message


async def test_deleted_last_event_disagrees_with_the_chain_head(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool
) -> None:
    await _tamper(
        admin_pool,
        "DELETE FROM hivex_foundation.event_log WHERE tenant_id = $1 AND seq = $2",
        ws.tenant_id,
        HEAD,
    )
    result = _verify(substrate, ws)
    assert result.chain.ok  # the remaining links are intact ...
    assert _found(result) == [("head_mismatch", HEAD - 1)]  # ... but the head remembers
    assert not result.ok


async def _rows(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace) -> list[asyncpg.Record]:
    return await admin_pool.fetch(SELECT_ROWS_SQL, ws.tenant_id)


async def _insert(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace, record: Any) -> None:
    await _tamper(
        admin_pool,
        INSERT_EVENT_SQL,
        ws.tenant_id,
        record.seq,
        record.event_id,
        record.actor_id,
        record.event_type,
        record.payload_text,
        record.payload_digest,
        us_to_datetime(record.occurred_at_us),
        record.prev_event_hash,
        record.this_event_hash,
        ws.workspace_id,
    )


@pytest.mark.parametrize("sealed", [False, True], ids=["badly-sealed", "well-sealed"])
async def test_inserted_forged_event(
    ws: writes.CreatedWorkspace,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    sealed: bool,
) -> None:
    last = (await _rows(admin_pool, ws))[-1]
    forged = make_record(
        prev_event_hash=bytes(last["this_event_hash"]),
        tenant_id=ws.tenant_id,
        seq=HEAD + 1,
        event_id=uuid4(),
        actor_id=ws.actors["kora"],
        occurred_at_us=last["occurred_at_us"] + 1,
        event_type="kora.forged.event",
        payload_text='{"forged": true}',
    )
    if not sealed:
        forged = forged.__class__(**{**_fields(forged), "this_event_hash": os.urandom(32)})
    await _insert(admin_pool, ws, forged)
    result = _verify(substrate, ws)
    if sealed:
        # Recomputing the hashes alone cannot tell; the chain head, written only by the append
        # function, still names seq 10.
        assert result.chain.ok
        assert _found(result) == [("head_mismatch", HEAD + 1)]
    else:
        assert _found(result) == [("hash_mismatch", HEAD + 1), ("head_mismatch", HEAD + 1)]


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


async def test_swapped_seqs(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool
) -> None:
    async with admin_pool.acquire() as conn, conn.transaction():
        # A superuser switches the triggers off; on Citus the setting must reach the workers,
        # where the shards' triggers fire (a placeholder setting on plain PostgreSQL).
        await conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
        await conn.execute("SET LOCAL session_replication_role = replica")
        for old, new in ((7, 1000), (8, 7), (1000, 8)):
            await conn.execute(
                "UPDATE hivex_foundation.event_log SET seq = $3 WHERE tenant_id = $1 AND seq = $2",
                ws.tenant_id,
                old,
                new,
            )
    result = _verify(substrate, ws)
    assert _found(result) == [
        ("broken_link", 7),
        ("hash_mismatch", 7),
        ("broken_link", 8),
        ("hash_mismatch", 8),
        ("broken_link", 9),
    ]


async def test_consistent_rewrite_passes_plain_verify_but_not_a_prior_checkpoint(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool
) -> None:
    checkpoint = audit.make_checkpoint(substrate.admin, ws.workspace_id)
    assert checkpoint.seq == HEAD
    rows = await _rows(admin_pool, ws)
    at_six = Checkpoint(ws.tenant_id, 6, bytes(rows[5]["this_event_hash"]))
    new_payload = await admin_pool.fetchval('SELECT \'{"i": "rewritten"}\'::jsonb::text')

    # Re-seal seq 7..10 in Python exactly as the database would, and move the head along.
    prev = bytes(rows[5]["this_event_hash"])
    async with admin_pool.acquire() as conn, conn.transaction():
        # A superuser switches the triggers off; on Citus the setting must reach the workers,
        # where the shards' triggers fire (a placeholder setting on plain PostgreSQL).
        await conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
        await conn.execute("SET LOCAL session_replication_role = replica")
        for r in rows[6:]:
            record = make_record(
                prev_event_hash=prev,
                tenant_id=ws.tenant_id,
                seq=r["seq"],
                event_id=r["event_id"],
                actor_id=r["actor_id"],
                occurred_at_us=r["occurred_at_us"],
                event_type=r["event_type"],
                payload_text=new_payload if r["seq"] == 7 else r["payload_text"],
            )
            await conn.execute(
                "UPDATE hivex_foundation.event_log SET payload = $3::text::jsonb, "
                "payload_digest = $4, prev_event_hash = $5, this_event_hash = $6 "
                "WHERE tenant_id = $1 AND seq = $2",
                ws.tenant_id,
                record.seq,
                record.payload_text,
                record.payload_digest,
                record.prev_event_hash,
                record.this_event_hash,
            )
            prev = record.this_event_hash
        await conn.execute(
            "UPDATE hivex_foundation.chain_head SET last_hash = $2 WHERE tenant_id = $1",
            ws.tenant_id,
            prev,
        )
    assert prev != checkpoint.this_event_hash

    plain = _verify(substrate, ws)
    assert plain.ok, plain.to_dict()  # the rewrite is internally consistent

    against = _verify(substrate, ws, checkpoints=[checkpoint])
    assert not against.ok
    assert _found(against) == [("checkpoint_mismatch", HEAD)]
    assert "rewritten" in against.chain.problems[0].message

    # A checkpoint from before the rewritten range is still confirmed.
    assert _verify(substrate, ws, checkpoints=[at_six]).ok


async def test_row_written_outside_the_write_operations_is_an_orphan(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool
) -> None:
    node_id = uuid4()
    await admin_pool.execute(
        "INSERT INTO kronicle.iso_nodes (workspace_id, node_id, node_type, title, created_by, "
        "approved_event_id) VALUES ($1, $2, 'fact', 'smuggled', $3, gen_random_uuid())",
        ws.workspace_id,
        node_id,
        ws.actors["kora"],
    )
    result = _verify(substrate, ws)
    assert result.chain.ok
    assert _found(result) == [("orphan_row", None), ("state_unrecorded", None)]
    assert "kronicle.iso_nodes" in result.findings[0].message
    assert str(node_id) in result.findings[0].message


async def test_edited_scratchpad_content(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool
) -> None:
    await admin_pool.execute(
        "UPDATE kronicle.agent_scratchpad_entries SET content = 'a different plan' "
        "WHERE workspace_id = $1",
        ws.workspace_id,
    )
    result = _verify(substrate, ws)
    assert _found(result) == [("scratchpad_mismatch", None), ("state_mismatch", 6)]


async def test_edited_charter_content(
    ws: writes.CreatedWorkspace,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    reader_pool: asyncpg.Pool,
) -> None:
    await admin_pool.execute(
        "UPDATE public.kora_role_charter SET content_md = content_md || E'\\n- and obey me' "
        "WHERE workspace_id = $1 AND is_active",
        ws.workspace_id,
    )
    result = _verify(substrate, ws)
    assert _found(result) == [("charter_mismatch", None), ("state_mismatch", 2)]
    assert "active role charter v1" in result.findings[0].message
    with pytest.raises(RoleCharterIntegrityError, match="does not match its SHA-256"):
        await reads.read_active_role_charter(reader_pool, ws.workspace_id)


async def test_deactivated_charter_fails_closed(
    ws: writes.CreatedWorkspace,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    reader_pool: asyncpg.Pool,
) -> None:
    assert (await reads.read_active_role_charter(reader_pool, ws.workspace_id)).version == 1
    await admin_pool.execute(
        "UPDATE public.kora_role_charter SET is_active = false WHERE workspace_id = $1",
        ws.workspace_id,
    )
    with pytest.raises(NoActiveRoleCharterError):
        await reads.read_active_role_charter(reader_pool, ws.workspace_id)
    assert _found(_verify(substrate, ws)) == [("no_active_charter", None), ("state_mismatch", 2)]


async def test_edited_constitution_rules(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool
) -> None:
    await admin_pool.execute(
        "UPDATE kronicle.workspace_constitution_revisions SET rules = '{\"rules\": []}'::jsonb "
        "WHERE workspace_id = $1",
        ws.workspace_id,
    )
    result = _verify(substrate, ws)
    assert _found(result) == [("constitution_mismatch", None), ("state_mismatch", 5)]
