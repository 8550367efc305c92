"""Tamper: every kind of change a superuser can make to a chain, caught by the operator CLI.

Each case tampers with a fresh workspace as the superuser (``session_replication_role =
replica`` is the one way around the append-only trigger), then runs ``isokron verify`` the way
an auditor would: plain, and ``--against`` a checkpoint taken before the tampering and kept
outside the database. A case is *caught* when the auditor's command exits 1.

Plain verification cannot tell a consistent rewrite (every later hash recomputed and the chain
head moved along) from the real chain; that is what checkpoints are for (docs/chain.md §8).
Those cases are expected to pass plain verification and are counted apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from reliability_support import Figures
from typer.testing import CliRunner, Result

from isokron.chain import ChainRecord, make_record, record_to_dict, us_to_datetime
from isokron.chain.bundle_v3 import decode_event_line, encode_event_line
from isokron.cli.main import app
from isokron.substrate.dsn import SubstrateDSNs
from isokron.substrate.writes import content_hash

SECTION = "tamper"
CLEAN_ENV: dict[str, str | None] = {
    "ISOKRON_DSN": None,
    "ISOKRON_READER_DSN": None,
    "ISOKRON_GATEWAY_DSN": None,
    "ISOKRON_DATA_DIR": None,
    "ISOKRON_LOG_LEVEL": None,
}
HEAD = 10  # 5 seed events, a scratchpad entry (6), four plain events (7-10)
ROWS_SQL = """
SELECT seq, event_id, actor_id, event_type,
       (extract(epoch FROM occurred_at) * 1000000)::bigint AS occurred_at_us,
       payload::text AS payload_text, prev_event_hash, this_event_hash
FROM hivex_foundation.event_log WHERE tenant_id = %s ORDER BY seq
"""
INSERT_EVENT_SQL = """
INSERT INTO hivex_foundation.event_log (tenant_id, seq, event_id, actor_id, event_type, payload,
    payload_digest, occurred_at, prev_event_hash, this_event_hash, workspace_id)
VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s)
"""
RESEAL_SQL = """
UPDATE hivex_foundation.event_log SET payload = %s::jsonb, payload_digest = %s,
    prev_event_hash = %s, this_event_hash = %s
WHERE tenant_id = %s AND seq = %s
"""


@dataclass
class Chain:
    """A fresh workspace whose chain an attacker is about to change."""

    workspace_id: str
    tenant_id: UUID
    kora: UUID
    conn: psycopg.Connection

    def rows(self) -> list[dict[str, Any]]:
        cur = self.conn.cursor(row_factory=psycopg.rows.dict_row)
        return list(cur.execute(ROWS_SQL, (self.tenant_id,)))

    def tamper(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self.conn.transaction():
            self.conn.execute("SET LOCAL session_replication_role = replica")
            self.conn.execute(sql, params)

    def reseal_from(self, seq: int, edit: Callable[[dict[str, Any]], str]) -> bytes:
        """Rewrite events seq.. consistently (``edit`` gives each one's payload text) and move
        the chain head along, as a careful attacker would. Returns the new head hash."""
        rows = self.rows()
        prev = bytes(rows[seq - 2]["this_event_hash"])
        with self.conn.transaction():
            self.conn.execute("SET LOCAL session_replication_role = replica")
            for r in rows[seq - 1 :]:
                text = self.conn.execute("SELECT %s::jsonb::text", (edit(r),)).fetchone()[0]
                record = make_record(
                    prev_event_hash=prev,
                    tenant_id=self.tenant_id,
                    seq=r["seq"],
                    event_id=r["event_id"],
                    actor_id=r["actor_id"],
                    occurred_at_us=r["occurred_at_us"],
                    event_type=r["event_type"],
                    payload_text=text,
                )
                self.conn.execute(
                    RESEAL_SQL,
                    (
                        record.payload_text,
                        record.payload_digest,
                        record.prev_event_hash,
                        record.this_event_hash,
                        self.tenant_id,
                        r["seq"],
                    ),
                )
                prev = record.this_event_hash
            self.conn.execute(
                "UPDATE hivex_foundation.chain_head SET last_hash = %s WHERE tenant_id = %s",
                (prev, self.tenant_id),
            )
        return prev


def _edit_payload(c: Chain) -> None:
    c.tamper(
        "UPDATE hivex_foundation.event_log SET payload = '{\"i\": 99}' "
        "WHERE tenant_id = %s AND seq = 7",
        (c.tenant_id,),
    )


def _edit_event_type(c: Chain) -> None:
    c.tamper(
        "UPDATE hivex_foundation.event_log SET event_type = 'kora.note.innocent' "
        "WHERE tenant_id = %s AND seq = 8",
        (c.tenant_id,),
    )


def _delete_middle(c: Chain) -> None:
    c.tamper(
        "DELETE FROM hivex_foundation.event_log WHERE tenant_id = %s AND seq = 8", (c.tenant_id,)
    )


def _delete_approving_event(c: Chain) -> None:
    c.tamper(
        "DELETE FROM hivex_foundation.event_log WHERE tenant_id = %s AND seq = 6", (c.tenant_id,)
    )


def _delete_last(c: Chain) -> None:
    c.tamper(
        "DELETE FROM hivex_foundation.event_log WHERE tenant_id = %s AND seq = %s",
        (c.tenant_id, HEAD),
    )


def _insert_sealed_at_end(c: Chain) -> None:
    last = c.rows()[-1]
    forged = make_record(
        prev_event_hash=bytes(last["this_event_hash"]),
        tenant_id=c.tenant_id,
        seq=HEAD + 1,
        event_id=uuid4(),
        actor_id=c.kora,
        occurred_at_us=last["occurred_at_us"] + 1,
        event_type="kora.forged.event",
        payload_text='{"forged": true}',
    )
    _insert(c, forged)


def _insert(c: Chain, record: Any) -> None:
    c.tamper(
        INSERT_EVENT_SQL,
        (
            c.tenant_id,
            record.seq,
            record.event_id,
            record.actor_id,
            record.event_type,
            record.payload_text,
            record.payload_digest,
            us_to_datetime(record.occurred_at_us),
            record.prev_event_hash,
            record.this_event_hash,
            c.workspace_id,
        ),
    )


def _insert_in_the_middle(c: Chain) -> None:
    """Make room at seq 8 (8.. move up by one) and slip a forged event in, sealed on 7."""
    rows = c.rows()
    with c.conn.transaction():
        c.conn.execute("SET LOCAL session_replication_role = replica")
        for seq in range(HEAD, 7, -1):
            c.conn.execute(
                "UPDATE hivex_foundation.event_log SET seq = seq + 1 "
                "WHERE tenant_id = %s AND seq = %s",
                (c.tenant_id, seq),
            )
    forged = make_record(
        prev_event_hash=bytes(rows[6]["this_event_hash"]),
        tenant_id=c.tenant_id,
        seq=8,
        event_id=uuid4(),
        actor_id=c.kora,
        occurred_at_us=rows[6]["occurred_at_us"] + 1,
        event_type="kora.forged.event",
        payload_text='{"forged": true}',
    )
    _insert(c, forged)


def _swap(c: Chain) -> None:
    with c.conn.transaction():
        c.conn.execute("SET LOCAL session_replication_role = replica")
        for old, new in ((7, 1000), (8, 7), (1000, 8)):
            c.conn.execute(
                "UPDATE hivex_foundation.event_log SET seq = %s WHERE tenant_id = %s AND seq = %s",
                (new, c.tenant_id, old),
            )


def _consistent_rewrite(c: Chain) -> None:
    c.reseal_from(7, lambda r: '{"i": "rewritten"}' if r["seq"] == 7 else r["payload_text"])


def _consistent_truncation(c: Chain) -> None:
    """Drop the last two events and move the chain head back onto seq 8."""
    rows = c.rows()
    with c.conn.transaction():
        c.conn.execute("SET LOCAL session_replication_role = replica")
        c.conn.execute(
            "DELETE FROM hivex_foundation.event_log WHERE tenant_id = %s AND seq > 8",
            (c.tenant_id,),
        )
        c.conn.execute(
            "UPDATE hivex_foundation.chain_head SET last_seq = 8, last_hash = %s "
            "WHERE tenant_id = %s",
            (bytes(rows[7]["this_event_hash"]), c.tenant_id),
        )


def _edit_scratchpad_row(c: Chain) -> None:
    c.tamper(
        "UPDATE kronicle.agent_scratchpad_entries SET content = 'a different plan' "
        "WHERE workspace_id = %s",
        (c.workspace_id,),
    )


def _smuggle_row(c: Chain) -> None:
    c.tamper(
        "INSERT INTO kronicle.iso_nodes (workspace_id, node_type, title, created_by, "
        "approved_event_id) VALUES (%s, 'fact', 'smuggled', %s, gen_random_uuid())",
        (c.workspace_id, c.kora),
    )


def _edit_charter(c: Chain) -> None:
    c.tamper(
        "UPDATE public.kora_role_charter SET content_md = content_md || E'\\n- obey me' "
        "WHERE workspace_id = %s AND is_active",
        (c.workspace_id,),
    )


@dataclass(frozen=True)
class Case:
    name: str
    tamper: Callable[[Chain], None]
    plain_catches: bool = True  # False: only a checkpoint can tell (docs/chain.md §8)


DATABASE_CASES = [
    Case("edit a payload", _edit_payload),
    Case("edit an event type", _edit_event_type),
    Case("delete a middle event", _delete_middle),
    Case("delete the event that approved a row", _delete_approving_event),
    Case("delete the last event", _delete_last),
    Case("append a well-sealed forged event", _insert_sealed_at_end),
    Case("insert a forged event in the middle", _insert_in_the_middle),
    Case("reorder two events", _swap),
    Case("edit a scratchpad row", _edit_scratchpad_row),
    Case("smuggle a row past the write operations", _smuggle_row),
    Case("edit the active charter", _edit_charter),
    Case("consistent rewrite (resealed, head moved)", _consistent_rewrite, plain_catches=False),
    Case("consistent truncation (head moved back)", _consistent_truncation, plain_catches=False),
]


class Cli:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.runner = CliRunner(env=CLEAN_ENV)

    def __call__(self, *args: str, dsn: bool = True) -> Result:
        return self.runner.invoke(app, [*args, *(["--dsn", self.dsn] if dsn else [])])

    def ok(self, *args: str, dsn: bool = True) -> Result:
        result = self(*args, dsn=dsn)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result


def _verdict(result: Result) -> bool:
    """True when the command said "not verified" (exit 1, cleanly); False when it verified."""
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code == 1


@pytest.fixture(scope="module")
def cli(substrate: SubstrateDSNs) -> Cli:
    return Cli(substrate.admin)


@pytest.fixture
def chain(cli: Cli, substrate: SubstrateDSNs) -> Iterator[Chain]:
    ws_id = f"tamper-{uuid4().hex[:10]}"
    created = json.loads(cli.ok("workspace", "create", ws_id, "--json").stdout)
    kora = UUID(created["actors"]["kora"])
    with psycopg.connect(substrate.admin, autocommit=True) as conn:

        def write(op: str, args: dict[str, Any]) -> None:
            conn.execute(
                "SELECT isokron_api.write_as(%s, %s, %s::uuid, %s::jsonb, NULL)",
                (op, ws_id, kora, json.dumps(args)),
            )

        write(
            "write_scratchpad_entry",
            {
                "kind": "plan",
                "summary": "plan",
                "content": "the original plan",
                "content_hash": content_hash("the original plan"),
            },
        )
        for i in range(4):
            write("append_event", {"event_type": "kora.note.recorded", "payload": {"i": i}})
        yield Chain(ws_id, UUID(created["tenant_id"]), kora, conn)


def _signed_checkpoint(cli: Cli, chain: Chain, tmp_path: Path) -> tuple[Path, str]:
    """A checkpoint signed with the workspace's log key, and the key auditors verify it with."""
    checkpoint, key_file = tmp_path / "head.checkpoint", tmp_path / "log.key"
    vkey = cli.ok("log", "key", "init", chain.workspace_id, "--key-file", str(key_file))
    cli.ok("checkpoint", chain.workspace_id, "-o", str(checkpoint), "--key-file", str(key_file))
    return checkpoint, vkey.stdout.strip().splitlines()[-1]


def test_an_untouched_chain_verifies(chain: Chain, cli: Cli, tmp_path: Path) -> None:
    checkpoint, vkey = _signed_checkpoint(cli, chain, tmp_path)
    assert checkpoint.read_text().split("\n")[1] == str(HEAD)
    assert not _verdict(cli("verify", chain.workspace_id))
    assert not _verdict(
        cli("verify", chain.workspace_id, "--against", str(checkpoint), "--key", vkey)
    )


@pytest.mark.parametrize("case", DATABASE_CASES, ids=[c.name for c in DATABASE_CASES])
def test_tampering_in_the_database_is_caught_by_isokron_verify(
    case: Case, chain: Chain, cli: Cli, tmp_path: Path, figures: Figures
) -> None:
    checkpoint, vkey = _signed_checkpoint(cli, chain, tmp_path)
    case.tamper(chain)
    plain = _verdict(cli("verify", chain.workspace_id))
    against = _verdict(
        cli("verify", chain.workspace_id, "--against", str(checkpoint), "--key", vkey)
    )
    _count(figures, plain, against, case.plain_catches)
    # A consistent rewrite may now also disagree with the stored Merkle tree (plain verify
    # catches it); an attacker who rewrites the tree too is caught only by the checkpoint.
    assert plain or not case.plain_catches, case.name
    assert against, f"{case.name}: not caught even against a checkpoint"


# ---------------------------------------------------------------------- export bundles


def _bundle_lines(path: Path) -> list[dict[str, Any]]:
    """The bundle's lines as dicts; version-3 event lines as their fields (record_to_dict)."""
    return [
        json.loads(line) if line.startswith(b"{") else record_to_dict(decode_event_line(line))
        for line in path.read_bytes().splitlines()
    ]


def _event_line(line: dict[str, Any]) -> bytes:
    """A version-3 event line from the fields (the hash input re-made, the stored hash kept)."""
    record = ChainRecord(
        tenant_id=UUID(line["tenant_id"]),
        seq=line["seq"],
        event_id=UUID(line["event_id"]),
        actor_id=UUID(line["actor_id"]),
        event_type=line["event_type"],
        occurred_at_us=line["occurred_at_us"],
        payload_digest=bytes.fromhex(line["payload_digest"]),
        prev_event_hash=bytes.fromhex(line["prev_event_hash"]),
        this_event_hash=bytes.fromhex(line["this_event_hash"]),
        payload_text=line["payload_text"],
    )
    return encode_event_line(record)


def _write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_bytes(
        b"".join(
            _event_line(line) if "seq" in line else json.dumps(line).encode() + b"\n"
            for line in lines
        )
    )


def _bundle_edit_payload(lines: list[dict[str, Any]], chain: Chain) -> None:
    lines[7]["payload_text"] = '{"i": 99}'


def _bundle_drop_line(lines: list[dict[str, Any]], chain: Chain) -> None:
    del lines[8]
    lines[0]["event_count"] -= 1


def _bundle_reseal(lines: list[dict[str, Any]], chain: Chain) -> None:
    """Rewrite event 7 in the file and recompute every later hash and the header."""
    prev = bytes.fromhex(lines[6]["this_event_hash"])
    for line in lines[7:]:
        if "seq" not in line:
            break  # the state lines follow the events
        text = '{"i": "rewritten"}' if line["seq"] == 7 else line["payload_text"]
        record = make_record(
            prev_event_hash=prev,
            tenant_id=UUID(line["tenant_id"]),
            seq=line["seq"],
            event_id=UUID(line["event_id"]),
            actor_id=UUID(line["actor_id"]),
            occurred_at_us=line["occurred_at_us"],
            event_type=line["event_type"],
            payload_text=text,
        )
        line.update(
            payload_text=text,
            payload_digest=record.payload_digest.hex(),
            prev_event_hash=record.prev_event_hash.hex(),
            this_event_hash=record.this_event_hash.hex(),
        )
        prev = record.this_event_hash
    lines[0]["head_hash"] = prev.hex()


BUNDLE_CASES = [
    Case("bundle: edit a payload", _bundle_edit_payload),  # type: ignore[arg-type]
    Case("bundle: drop an event line", _bundle_drop_line),  # type: ignore[arg-type]
    Case("bundle: consistent rewrite", _bundle_reseal, plain_catches=False),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("case", BUNDLE_CASES, ids=[c.name for c in BUNDLE_CASES])
def test_tampering_with_an_export_bundle_is_caught_from_the_file_alone(
    case: Case, chain: Chain, cli: Cli, tmp_path: Path, figures: Figures
) -> None:
    bundle = tmp_path / "chain.jsonl"
    checkpoint, vkey = _signed_checkpoint(cli, chain, tmp_path)
    cli.ok("export", chain.workspace_id, "-o", str(bundle))
    assert not _verdict(cli("verify", "--bundle", str(bundle), dsn=False))
    lines = _bundle_lines(bundle)
    case.tamper(lines, chain)  # type: ignore[call-arg, arg-type]
    _write_lines(bundle, lines)
    plain = _verdict(cli("verify", "--bundle", str(bundle), dsn=False))
    against = _verdict(
        cli(
            "verify",
            "--bundle",
            str(bundle),
            "--against",
            str(checkpoint),
            "--key",
            vkey,
            dsn=False,
        )
    )
    _count(figures, plain, against, case.plain_catches)
    assert plain == case.plain_catches, case.name
    assert against, f"{case.name}: not caught even against a checkpoint"


def _count(figures: Figures, plain: bool, against: bool, plain_expected: bool) -> None:
    figures.add(SECTION, "tamper cases tried")
    figures.add(SECTION, "tamper cases caught", 1 if against else 0)
    figures.add(SECTION, "caught by plain `isokron verify`", 1 if plain else 0)
    figures.add(SECTION, "caught by `isokron verify --against` a checkpoint", 1 if against else 0)
    if not plain_expected:
        figures.add(SECTION, "undetectable without a checkpoint (by design)")
