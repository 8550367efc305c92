"""Export bundles: round trip, atomic writes, malformed lines (version 2, JSON event lines,
which readers still read; version 3 is in test_chain_bundle_v3)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import pytest

from isokron.chain import (
    GENESIS_HASH,
    BundleHeader,
    ChainRecord,
    Checkpoint,
    make_record,
    read_bundle,
    verify_bundle,
    write_bundle,
)
from isokron.errors import ChainError

TENANT = UUID("11111111-2222-4333-8444-555555555555")
ACTOR = UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
EXPORTED_AT = datetime(2025, 1, 16, 8, 0, tzinfo=UTC)
DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "chain.md"


def bundle_chain(
    n: int, tenant: UUID = TENANT, *, payload: Callable[[int], str] | None = None
) -> list[ChainRecord]:
    """A valid chain of ``n`` events; ``payload`` gives each seq's payload text."""
    chain: list[ChainRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        record = make_record(
            prev_event_hash=prev,
            tenant_id=tenant,
            seq=seq,
            event_id=uuid5(tenant, f"bundle-event-{seq}"),
            actor_id=ACTOR,
            occurred_at_us=1_736_933_400_000_000 + seq * 3_000_007,
            event_type="memory.write" if seq % 3 else "mémoire.écrite",
            payload_text=(
                f'{{"n": {seq}, "note": "Grüße {seq}\\n🌍"}}' if payload is None else payload(seq)
            ),
        )
        chain.append(record)
        prev = record.this_event_hash
    return chain


def write(path: Path, records: Iterable[ChainRecord], version: int = 2) -> BundleHeader:
    return write_bundle(
        path,
        workspace_id="acme",
        tenant_id=TENANT,
        records=records,
        exported_at=EXPORTED_AT,
        version=version,
    )


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def rewrite(path: Path, lines: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in lines)
    path.write_text(text, encoding="utf-8")


def test_round_trip(tmp_path: Path) -> None:
    chain = bundle_chain(12)
    chain[4] = dataclasses.replace(chain[4], payload_text=None)  # an erased payload
    path = tmp_path / "tenant.jsonl"
    header = write(path, chain)

    assert header.event_count == 12
    assert header.head_seq == 12
    assert header.head_hash == chain[-1].this_event_hash

    read_header, records = read_bundle(path)
    assert read_header == header
    assert list(records) == chain
    report = verify_bundle(path)
    assert report.ok, report.problems
    assert report.events_checked == 12


def test_file_layout(tmp_path: Path) -> None:
    chain = bundle_chain(3)
    path = tmp_path / "tenant.jsonl"
    write(path, chain)
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    assert "Grüße".encode() in raw  # UTF-8, not \u escapes
    header, first, *_ = lines_of(path)
    assert list(header) == [
        "format",
        "version",
        "workspace_id",
        "tenant_id",
        "exported_at",
        "event_count",
        "head_seq",
        "head_hash",
        "state_rows",
    ]
    assert header["format"] == "isokron-chain-export"
    assert header["version"] == 2
    assert header["state_rows"] is None  # written without a state section
    assert header["exported_at"] == "2025-01-16T08:00:00.000000Z"
    assert header["head_hash"] == chain[-1].this_event_hash.hex()
    assert list(first) == [
        "seq",
        "event_id",
        "tenant_id",
        "actor_id",
        "event_type",
        "occurred_at",
        "occurred_at_us",
        "payload_text",
        "payload_digest",
        "prev_event_hash",
        "this_event_hash",
    ]
    assert first["prev_event_hash"] == "00" * 32
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["occurred_at"])
    # Payloads may be personal data: the bundle is private to its owner.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_empty_bundle(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    header = write(path, [])
    assert header.event_count == 0 and header.head_seq is None and header.head_hash is None
    report = verify_bundle(path)
    assert report.ok and report.events_checked == 0


def test_write_to_binary_and_text_streams() -> None:
    chain = bundle_chain(4)
    binary = io.BytesIO()
    write_bundle(binary, workspace_id="acme", tenant_id=TENANT, records=chain)
    text = io.StringIO()
    write_bundle(text, workspace_id="acme", tenant_id=TENANT, records=chain)
    assert binary.getvalue().decode("utf-8").splitlines()[1:] == text.getvalue().splitlines()[1:]
    binary.seek(0)
    assert verify_bundle(binary).ok
    text.seek(0)
    assert verify_bundle(text).ok


def test_write_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer, encoding="utf-8"))
    write_bundle("-", workspace_id="acme", tenant_id=TENANT, records=bundle_chain(2))
    lines = buffer.getvalue().decode("utf-8").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0])["event_count"] == 2


def test_crash_mid_write_leaves_no_file(tmp_path: Path) -> None:
    chain = bundle_chain(10)

    def exploding() -> Iterator[ChainRecord]:
        yield from chain[:5]
        raise RuntimeError("database connection lost")

    path = tmp_path / "tenant.jsonl"
    with pytest.raises(RuntimeError, match="connection lost"):
        write(path, exploding())
    assert list(tmp_path.iterdir()) == []


def test_crash_mid_write_keeps_previous_bundle(tmp_path: Path) -> None:
    path = tmp_path / "tenant.jsonl"
    write(path, bundle_chain(3))
    before = path.read_bytes()

    def exploding() -> Iterator[ChainRecord]:
        yield from bundle_chain(6)[:4]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_bundle(path, workspace_id="acme", tenant_id=TENANT, records=exploding())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tenant.jsonl"]


def test_tampered_payload_in_file(tmp_path: Path) -> None:
    path = tmp_path / "tenant.jsonl"
    write(path, bundle_chain(5))
    lines = lines_of(path)
    lines[3]["payload_text"] = '{"n": 3, "note": "forged"}'
    rewrite(path, lines)
    report = verify_bundle(path)
    assert [(p.kind, p.seq) for p in report.problems] == [("payload_mismatch", 3)]


def test_header_mismatches(tmp_path: Path) -> None:
    path = tmp_path / "tenant.jsonl"
    write(path, bundle_chain(5))
    lines = lines_of(path)
    rewrite(path, lines[:-1])  # drop the last event, keep the header
    report = verify_bundle(path)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["header_mismatch"] * 3
    assert "event_count 5" in report.problems[0].message

    lines[0]["event_count"] = 6
    rewrite(path, lines)
    assert [p.kind for p in verify_bundle(path).problems] == ["header_mismatch"]


def test_foreign_tenant_line(tmp_path: Path) -> None:
    path = tmp_path / "tenant.jsonl"
    write(path, bundle_chain(3))
    lines = lines_of(path)
    other = "99999999-8888-4777-8666-555555555555"
    lines[0]["tenant_id"] = other
    rewrite(path, lines)
    report = verify_bundle(path)
    assert {p.kind for p in report.problems} == {"tenant_mismatch"}
    assert report.events_checked == 3


def test_bundle_against_checkpoints(tmp_path: Path) -> None:
    chain = bundle_chain(6)
    path = tmp_path / "tenant.jsonl"
    write(path, chain)
    good = Checkpoint(TENANT, 4, chain[3].this_event_hash)
    bad = Checkpoint(TENANT, 4, bytes(32))
    assert verify_bundle(path, [good]).ok
    report = verify_bundle(path, [bad])
    assert [(p.kind, p.seq) for p in report.problems] == [("checkpoint_mismatch", 4)]


Mutation = Callable[[list[str]], None]


def _set(line_no: int, key: str, value: Any) -> Mutation:
    def mutate(lines: list[str]) -> None:
        obj = json.loads(lines[line_no - 1])
        obj[key] = value
        lines[line_no - 1] = json.dumps(obj)

    return mutate


def _drop(line_no: int, key: str) -> Mutation:
    def mutate(lines: list[str]) -> None:
        obj = json.loads(lines[line_no - 1])
        del obj[key]
        lines[line_no - 1] = json.dumps(obj)

    return mutate


def _replace_line(line_no: int, text: str) -> Mutation:
    def mutate(lines: list[str]) -> None:
        lines[line_no - 1] = text

    return mutate


@pytest.mark.parametrize(
    ("mutate", "line_no", "needle"),
    [
        (_replace_line(3, '{"seq": 2, '), 3, "not valid JSON"),
        (_replace_line(3, ""), 3, "not valid JSON"),
        (_replace_line(2, "[1, 2]"), 2, "JSON object"),
        (_drop(4, "actor_id"), 4, "actor_id"),
        (_drop(1, "head_hash"), 1, "head_hash"),
        (_set(3, "prev_event_hash", "zz" * 32), 3, "not hexadecimal"),
        (_set(3, "this_event_hash", "ab" * 31), 3, "64 hex digits"),
        (_set(2, "payload_digest", "ab" * 33), 2, "64 hex digits"),
        (_set(2, "payload_digest", None), 2, "must be a string"),
        (_set(3, "seq", "3"), 3, "integer"),
        (_set(3, "seq", True), 3, "integer"),
        (_set(3, "event_id", "not-a-uuid"), 3, "not a UUID"),
        (_set(3, "occurred_at", "2025-01-15T09:30:00.000000Z"), 3, "does not match"),
        (_set(3, "occurred_at", "yesterday"), 3, "ISO-8601"),
        (_set(3, "payload_text", 5), 3, "payload_text"),
        (_set(1, "format", "something-else"), 1, "not an isokron chain export"),
        (_set(1, "version", 4), 1, "version 4"),
        (_set(1, "head_hash", "00"), 1, "64 hex digits"),
        (_set(1, "tenant_id", "x"), 1, "not a UUID"),
    ],
)
def test_malformed_lines_name_the_line(
    tmp_path: Path, mutate: Mutation, line_no: int, needle: str
) -> None:
    path = tmp_path / "tenant.jsonl"
    write(path, bundle_chain(4))
    lines = path.read_text(encoding="utf-8").splitlines()
    mutate(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ChainError) as info:
        verify_bundle(path)
    message = str(info.value)
    assert f"line {line_no}:" in message
    assert needle in message


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tenant.jsonl"
    write(path, bundle_chain(3))
    raw = path.read_bytes().split(b"\n")
    raw[2] = raw[2].replace(b"memory", b"mem\xffory", 1)
    path.write_bytes(b"\n".join(raw))
    with pytest.raises(ChainError, match=r"line 3: not valid UTF-8"):
        verify_bundle(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(ChainError, match="line 1: the file is empty"):
        read_bundle(empty)
    with pytest.raises(ChainError, match="cannot open"):
        read_bundle(tmp_path / "absent.jsonl")


def test_reader_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "tenant.jsonl"
    write(path, bundle_chain(4))
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[4] = "garbage"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _header, records = read_bundle(path)
    assert next(records).seq == 1  # earlier lines are usable before the bad one is reached
    with pytest.raises(ChainError, match="line 5"):
        list(records)
