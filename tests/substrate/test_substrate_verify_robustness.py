"""Verification never depends on the auditor's environment and never crashes on forged data:
a client encoding other than UTF-8 (PGCLIENTENCODING) changes neither the verdict nor the bytes
of an export; forged payloads too large or too deep for the JSON parser, a NULL tombstone, a
state line with the wrong number of values or a lone surrogate are findings, not exceptions.
Each case was found by an adversarial review (all but the first also fail the same way on the
release before this round's changes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import asyncpg
import psycopg
import pytest

from isokron.chain import verify_bundle
from isokron.errors import ChainError
from isokron.substrate import audit, writes
from isokron.substrate.dsn import SubstrateDSNs

LATIN = "Grüße, déjà vu: droit à l'oubli"


@pytest.fixture
async def ws(make_workspace: Callable, admin_pool: asyncpg.Pool) -> writes.CreatedWorkspace:
    """A workspace with a Latin-1 scratchpad entry and an erased event with a Latin-1 reason."""
    created = await make_workspace("robust")
    for i in range(2):
        await writes.write(
            admin_pool,
            "write_scratchpad_entry",
            created.workspace_id,
            created.actors["kora"],
            writes.scratchpad_args(kind="observation", summary=f"{LATIN} {i}", content=LATIN),
        )
    async with admin_pool.acquire() as conn:
        seq = await conn.fetchval(
            "SELECT max(seq) FROM hivex_foundation.event_log WHERE workspace_id = $1",
            created.workspace_id,
        )
        await writes.erase_event_payload(conn, created.workspace_id, seq, LATIN)
    return created


def _tamper(dsn: str, statements: str, ws_id: str) -> None:
    """As a superuser, behind the write path's back (no triggers); statements split at ';'."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for statement in statements.split("; "):
            conn.execute(statement, {"ws": ws_id})


@pytest.mark.parametrize("encoding", ["WIN1252", "LATIN1", "SQL_ASCII"])
def test_the_client_encoding_changes_neither_verdict_nor_export(
    ws: writes.CreatedWorkspace,
    substrate: SubstrateDSNs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    encoding: str,
) -> None:
    monkeypatch.setenv("PGCLIENTENCODING", encoding)
    result = audit.verify_workspace(substrate.admin, ws.workspace_id)
    assert result.ok, result.findings
    path = tmp_path / "b.jsonl"
    audit.export_workspace(substrate.admin, ws.workspace_id, path)
    assert LATIN.encode("utf-8") in path.read_bytes()
    report = verify_bundle(path)
    assert report.ok, report.problems


def test_a_forged_payload_the_parser_refuses_is_a_finding(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs
) -> None:
    forged = {
        "a number of 5,000 digits": '{"state": {"x": {"k": ' + "9" * 5000 + "}}}",
        "nesting 5,000 deep": '{"state": ' + "[" * 5000 + "]" * 5000 + "}",
    }
    for label, payload in forged.items():
        _tamper(
            substrate.admin,
            "UPDATE hivex_foundation.event_log SET payload = '" + payload + "'::jsonb "
            "WHERE workspace_id = %(ws)s AND seq = (SELECT max(seq) FROM "
            "hivex_foundation.event_log WHERE workspace_id = %(ws)s AND NOT payload_erased "
            "AND event_type <> 'substrate.payload.erased')",
            ws.workspace_id,
        )
        result = audit.verify_workspace(substrate.admin, ws.workspace_id)
        kinds = {p.kind for p in result.chain.problems} | {f.kind for f in result.findings}
        assert not result.ok and "payload_mismatch" in kinds, (label, kinds)


def test_a_null_tombstone_is_malformed(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs
) -> None:
    _tamper(
        substrate.admin,
        "ALTER TABLE hivex_foundation.event_log ALTER COLUMN payload DROP NOT NULL; "
        "UPDATE hivex_foundation.event_log SET payload = NULL "
        "WHERE workspace_id = %(ws)s AND payload_erased",
        ws.workspace_id,
    )
    try:
        result = audit.verify_workspace(substrate.admin, ws.workspace_id)
    finally:
        _tamper(
            substrate.admin,
            "UPDATE hivex_foundation.event_log SET payload = '{}' WHERE payload IS NULL; "
            "ALTER TABLE hivex_foundation.event_log ALTER COLUMN payload SET NOT NULL",
            ws.workspace_id,
        )
    assert [f.kind for f in result.findings] == ["tombstone_malformed"], result.findings


def _bundle(dsn: str, ws_id: str, path: Path) -> list[bytes]:
    audit.export_workspace(dsn, ws_id, path)
    return path.read_bytes().splitlines(keepends=True)


def test_a_state_line_with_wrong_values_is_a_finding(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, tmp_path: Path
) -> None:
    path = tmp_path / "b.jsonl"
    lines = _bundle(substrate.admin, ws.workspace_id, path)
    table = b'{"state_table": "kronicle.agent_scratchpad_entries"'
    at = next(i for i, line in enumerate(lines) if line.startswith(table))
    original = lines[at]
    head, values = original.split(b'"values": [', 1)
    forged = {
        "one value too few": head + b'"values": [' + values.split(b", ", 1)[1],
        "one value too many": head + b'"values": ["extra", ' + values,
        "a lone surrogate": head + b'"values": ["\\ud800", ' + values.split(b", ", 1)[1],
    }
    for label, line in forged.items():
        path.write_bytes(b"".join([*lines[:at], line, *lines[at + 1 :]]))
        report = verify_bundle(path)
        kinds = [p.kind for p in report.problems]
        assert kinds == ["state_mismatch"], (label, kinds)


def test_a_state_line_the_parser_refuses_names_its_line(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs, tmp_path: Path
) -> None:
    path = tmp_path / "b.jsonl"
    lines = _bundle(substrate.admin, ws.workspace_id, path)
    for label, line in {
        "a number of 5,000 digits": b'{"state_table": "x", "key": "k", "values": '
        + b"9" * 5000
        + b"}\n",
        "nesting 5,000 deep": b'{"state_table": "x", "key": "k", "values": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}\n",
    }.items():
        path.write_bytes(b"".join([*lines, line]))
        with pytest.raises(ChainError, match=f"line {len(lines) + 1}: not valid JSON"):
            verify_bundle(path)
        print(f"\n  {label}: refused with the line named")
