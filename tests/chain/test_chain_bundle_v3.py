"""Bundle version 3 (docs/chain.md §6): the fast verifier finds exactly what the detailed one
finds, on every kind of tampering; malformed lines are named; v3 round-trips; the documented
stand-alone verifier reads it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from test_chain_bundle import DOCS_PATH, EXPORTED_AT, TENANT, bundle_chain

from isokron.chain import (
    ChainRecord,
    Checkpoint,
    make_record,
    read_bundle,
    record_hash,
    verify_bundle,
    write_bundle,
)
from isokron.chain.bundle import HEADER_RESERVE
from isokron.chain.bundle_v3 import decode_event_line, encode_event_line
from isokron.errors import ChainError

OTHER_TENANT = UUID("99999999-2222-4333-8444-555555555555")
Tamper = Callable[[list[ChainRecord]], list[ChainRecord]]


def _reseal(record: ChainRecord, **changes: Any) -> ChainRecord:
    """The record with ``changes`` and a this_event_hash recomputed to match them."""
    changed = dataclasses.replace(record, **changes)
    return dataclasses.replace(changed, this_event_hash=record_hash(changed))


def _edit(index: int, **changes: Any) -> Tamper:
    def tamper(chain: list[ChainRecord]) -> list[ChainRecord]:
        chain[index] = dataclasses.replace(chain[index], **changes)
        return chain

    return tamper


def _resealed(index: int, **changes: Any) -> Tamper:
    def tamper(chain: list[ChainRecord]) -> list[ChainRecord]:
        chain[index] = _reseal(chain[index], **changes)
        return chain

    return tamper


def _foreign(chain: list[ChainRecord]) -> list[ChainRecord]:
    chain[4] = _reseal(chain[4], tenant_id=OTHER_TENANT)
    return chain


# Each tampering and the finding kinds it must produce (at least).
TAMPERS: dict[str, tuple[Tamper, set[str]]] = {
    "untouched": (lambda c: c, set()),
    "first-event-removed": (lambda c: c[1:], {"genesis"}),
    "genesis-relinked": (_resealed(0, prev_event_hash=b"\x01" * 32), {"genesis"}),
    "events-removed": (lambda c: c[:3] + c[5:], {"seq_gap"}),
    "event-duplicated": (lambda c: c[:4] + [c[3]] + c[4:], {"fork"}),
    "events-swapped": (lambda c: c[:3] + [c[4], c[3]] + c[5:], {"fork", "seq_gap"}),
    "edited-type": (_edit(2, event_type="memory.delete"), {"hash_mismatch"}),
    "edited-hash": (_edit(5, this_event_hash=b"\x07" * 32), {"hash_mismatch", "broken_link"}),
    "resealed-link": (_resealed(3, prev_event_hash=b"\x05" * 32), {"broken_link"}),
    "edited-payload": (_edit(6, payload_text='{"n": 7}'), {"payload_mismatch"}),
    "foreign-tenant": (_foreign, {"tenant_mismatch"}),
    "erased-payload": (_edit(1, payload_text=None), set()),
}


def _write(path: Path, chain: list[ChainRecord], version: int) -> None:
    write_bundle(
        path,
        workspace_id="acme",
        tenant_id=TENANT,
        records=chain,
        exported_at=EXPORTED_AT,
        version=version,
    )


@pytest.mark.parametrize("case", list(TAMPERS))
def test_v3_finds_what_v2_finds(tmp_path: Path, case: str) -> None:
    tamper, kinds = TAMPERS[case]
    chain = tamper(bundle_chain(9))
    checkpoints = [Checkpoint(TENANT, 8, bundle_chain(9)[7].this_event_hash)]
    reports = {}
    for version in (2, 3):
        path = tmp_path / f"v{version}.jsonl"
        _write(path, chain, version)
        reports[version] = verify_bundle(path, checkpoints).to_dict()
    assert reports[3] == reports[2]
    found = {p["kind"] for p in reports[3]["problems"]}
    assert kinds <= found and (found or not kinds) and reports[3]["ok"] == (not found)
    print(f"{case}: {reports[3]['problem_count']} finding(s) {sorted(found)}")


def test_every_finding_kind_is_caught_with_v3(tmp_path: Path) -> None:
    """Tamperings (plus a bad checkpoint and an edited header) cover every kind but the
    Merkle one (which belongs to the database's tree, §12)."""
    caught: dict[str, int] = {}
    for tamper, _ in TAMPERS.values():
        path = tmp_path / "t.jsonl"
        _write(path, tamper(bundle_chain(9)), 3)
        for problem in verify_bundle(path).problems:
            caught[problem.kind] = caught.get(problem.kind, 0) + 1
    path = tmp_path / "t.jsonl"
    _write(path, bundle_chain(9), 3)
    report = verify_bundle(path, [Checkpoint(TENANT, 4, b"\x00" * 32)])
    caught["checkpoint_mismatch"] = len(report.problems)
    lines = path.read_bytes().split(b"\n")
    header = json.loads(lines[0])
    header["event_count"] = 8
    path.write_bytes(b"\n".join([json.dumps(header).encode(), *lines[1:]]))
    problems = verify_bundle(path).problems
    caught["header_mismatch"] = sum(p.kind == "header_mismatch" for p in problems)
    expected = {
        "genesis", "seq_gap", "fork", "broken_link", "hash_mismatch", "payload_mismatch",
        "tenant_mismatch", "checkpoint_mismatch", "header_mismatch",
    }  # fmt: skip
    print("v3 findings by kind:", dict(sorted(caught.items())))
    assert {k for k, n in caught.items() if n} == expected


def test_round_trip_and_line_layout(tmp_path: Path) -> None:
    chain = bundle_chain(5)
    chain[2] = dataclasses.replace(chain[2], payload_text=None)
    path = tmp_path / "t.jsonl"
    _write(path, chain, 3)
    header, records = read_bundle(path)
    assert header.version == 3 and list(records) == chain
    line = path.read_bytes().split(b"\n")[1]
    hex_input, hex_hash, payload = line.split(b"\t")
    assert hashlib.sha256(bytes.fromhex(hex_input.decode())).hexdigest() == hex_hash.decode()
    assert payload.decode() == chain[0].payload_text
    assert decode_event_line(encode_event_line(chain[2])) == chain[2]  # erased: empty field
    assert verify_bundle(path).ok


def _mangle(index: int, old: bytes, new: bytes) -> Callable[[list[bytes]], None]:
    def mangle(lines: list[bytes]) -> None:
        lines[index] = lines[index].replace(old, new, 1)

    return mangle


@pytest.mark.parametrize(
    ("mangle", "line_no", "needle"),
    [
        (_mangle(2, b"\t", b" "), 3, "HASH_INPUT_HEX"),
        (_mangle(3, b"69", b"zz"), 4, "HASH_INPUT_HEX"),
        (_mangle(3, b"\t", b"00\t"), 4, "event type length"),
        (_mangle(2, b"69736f", b"78736f"), 3, "prefix"),
        (_mangle(3, b"{", b"\xff{"), 4, "UTF-8"),
        (lambda lines: lines.insert(2, b'{"seq": 1}'), 3, "not JSON"),
    ],
)
def test_malformed_v3_lines_name_the_line(
    tmp_path: Path, mangle: Callable[[list[bytes]], None], line_no: int, needle: str
) -> None:
    path = tmp_path / "t.jsonl"
    _write(path, bundle_chain(4), 3)
    lines = path.read_bytes().split(b"\n")
    mangle(lines)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ChainError, match=rf"line {line_no}: .*{re.escape(needle)}"):
        verify_bundle(path)


def test_a_payload_with_a_line_break_is_refused() -> None:
    record = bundle_chain(1)[0]
    bad = make_record(
        prev_event_hash=record.prev_event_hash,
        tenant_id=record.tenant_id,
        seq=1,
        event_id=record.event_id,
        actor_id=record.actor_id,
        occurred_at_us=record.occurred_at_us,
        event_type="x",
        payload_text='{"a":\n1}',
    )
    with pytest.raises(ChainError, match="line break"):
        encode_event_line(bad)


def _documented_verifier(tmp_path: Path) -> Path:
    docs = DOCS_PATH.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- verifier:begin -->\s*```python\n(.*?)```\s*<!-- verifier:end -->", docs, re.S
    )
    assert match, "docs/chain.md lost its stand-alone verifier block"
    script = tmp_path / "verify_export.py"
    script.write_text(match.group(1), encoding="utf-8")
    return script


def _run(script: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, check=False
    )


def test_documented_standalone_verifier(tmp_path: Path) -> None:
    script = _documented_verifier(tmp_path)
    chain = bundle_chain(7)
    chain[2] = dataclasses.replace(chain[2], payload_text=None)
    path = tmp_path / "tenant.jsonl"
    _write(path, chain, 3)
    ok = _run(script, path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout

    for case, needle in (
        ("edited-type", "seq 3: this_event_hash does not match"),
        ("events-removed", "seq 6: expected seq 4"),
        ("edited-payload", "seq 7: payload_text does not match"),
        ("foreign-tenant", "seq 5: belongs to tenant"),
        ("resealed-link", "seq 4: prev_event_hash does not link"),
    ):
        _write(path, TAMPERS[case][0](bundle_chain(9)), 3)
        bad = _run(script, path)
        assert bad.returncode == 1, case
        assert needle in bad.stdout, (case, bad.stdout)


def test_documented_v3_test_vector() -> None:
    """docs/chain.md §6's version-3 line is Vector 2 of §10, byte for byte."""
    docs = DOCS_PATH.read_text(encoding="utf-8")
    match = re.search(r"<!-- v3-vector:begin -->\s*```\n(.*?)\n```", docs, re.S)
    assert match, "docs/chain.md lost its version-3 test vector"
    documented = match.group(1).replace("<TAB>", "\t").replace("<LF>", "\n").encode()
    record = make_record(
        prev_event_hash=bytes.fromhex(
            "ec426754777f8a8835c81b429b5078b06df63570027d3c163a8e3060d77d5db1"
        ),
        tenant_id=TENANT,
        seq=2,
        event_id=UUID("00000000-0000-4000-8000-000000000002"),
        actor_id=UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"),
        occurred_at_us=1736933401000001,
        event_type="memory.write",
        payload_text='{"n": 1, "summary": "hello"}',
    )
    assert encode_event_line(record) == documented
    assert decode_event_line(documented) == record


def test_written_in_place_with_a_padded_header(tmp_path: Path) -> None:
    """A version-3 bundle is written once: its header line is padded with spaces to a fixed
    reserve (valid JSON); a header longer than the reserve still makes a correct file; a
    failure leaves no file."""
    path = tmp_path / "t.jsonl"
    _write(path, bundle_chain(3), 3)
    first = path.read_bytes().split(b"\n", 1)[0]
    assert len(first) == HEADER_RESERVE and first.endswith(b" ")
    assert json.loads(first)["event_count"] == 3 and verify_bundle(path).ok
    assert path.stat().st_mode & 0o777 == 0o600

    long_name = tmp_path / "long.jsonl"
    write_bundle(long_name, workspace_id="w" * 2000, tenant_id=TENANT, records=bundle_chain(3))
    header, records = read_bundle(long_name)
    assert header.workspace_id == "w" * 2000 and len(list(records)) == 3
    assert not long_name.read_bytes().split(b"\n", 1)[0].endswith(b" ")

    def exploding() -> Any:
        yield from bundle_chain(4)[:2]
        raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError):
        write_bundle(tmp_path / "x.jsonl", workspace_id="a", tenant_id=TENANT, records=exploding())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.jsonl", "t.jsonl"]
