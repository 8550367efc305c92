"""The canonical row form (docs/chain.md §11): vectors, column naming, the ledger's verdicts."""

from __future__ import annotations

import json
from pathlib import Path

from isokron.chain import Finding
from isokron.chain.state import (
    STATE_TABLES_BY_NAME,
    StateLedger,
    differing_columns,
    row_bytes,
    row_digest,
    row_record,
)

VECTORS = json.loads((Path(__file__).parent / "row_vectors.json").read_text(encoding="utf-8"))
DOC = (Path(__file__).parents[2] / "docs" / "chain.md").read_text(encoding="utf-8")


def _finding(kind: str, seq: int | None, message: str) -> Finding:
    return Finding(kind, seq, None, message)


def test_row_vectors_reproduce_and_are_the_documented_ones() -> None:
    for v in VECTORS:
        assert row_bytes(v["table"], v["columns"], v["values"]).hex() == v["row_bytes_hex"]
        record = row_record(v["table"], v["columns"], v["values"])
        assert (record.d, record.c) == (v["d"], v["c"])
        assert row_digest(v["table"], v["columns"], v["values"]) == v["d"]
        assert v["row_bytes_hex"] in DOC and v["d"] in DOC and v["c"] in DOC


def test_null_and_empty_text_differ() -> None:
    a = row_record("t", ["x"], [None])
    b = row_record("t", ["x"], [""])
    assert a.d != b.d
    assert row_digest("t", ["x"], [None]) == a.d != row_digest("t", ["x"], [""]) == b.d


def test_differing_columns_names_what_changed() -> None:
    table = STATE_TABLES_BY_NAME["public.kora_policy_registry"]
    v = next(x for x in VECTORS if x["table"] == table.name)
    before = row_record(table.name, table.column_names, v["values"])
    values = list(v["values"])
    values[2] = "true"
    after = row_record(table.name, table.column_names, values)
    assert differing_columns(table, before, after) == ["policy_value"]


def test_the_ledger_uses_the_latest_record_and_names_missing_and_extra_rows() -> None:
    table = STATE_TABLES_BY_NAME["public.kora_policy_registry"]
    v = next(x for x in VECTORS if x["table"] == table.name)
    old = row_record(table.name, table.column_names, ["acme", "policy.a", "1", "", "1", "x"])
    new = row_record(table.name, table.column_names, ["acme", "policy.a", "2", "", "2", "y"])
    ledger = StateLedger()
    ledger.add_event(
        1,
        "e1",
        "governance.policy.set",
        {"state": {table.name: {"policy.a": old.to_json(), "policy.b": old.to_json()}}},
    )
    ledger.add_event(
        2, "e2", "governance.policy.set", {"state": {table.name: {"policy.a": new.to_json()}}}
    )
    rows = [("policy.a", ["acme", "policy.a", "1", "", "1", "x"]), ("policy.z", v["values"])]
    found = ledger.check_table(table, rows, _finding)
    found += ledger.finish([table], _finding)
    kinds = sorted((f.kind, f.seq) for f in found)
    assert kinds == [("state_mismatch", 2), ("state_missing", 1), ("state_unrecorded", None)]
    mismatch = next(f for f in found if f.kind == "state_mismatch")
    assert "policy_value, updated_at, approved_event_id" in mismatch.message


def test_a_tombstone_needs_a_chained_erasure_of_the_fixed_form() -> None:
    tomb = {"erased": True, "reason": "gdpr", "erased_at": "2026-01-01"}
    ledger = StateLedger()
    ledger.add_event(3, "e3", "kora.note", tomb, erased=True)
    assert [f.kind for f in ledger.finish([], _finding)] == ["erasure_unchained"]
    ledger.add_event(
        4,
        "e4",
        "substrate.payload.erased",
        {"erased_seq": 3, "erased_event_id": "e3", "reason": "gdpr"},
    )
    assert ledger.finish([], _finding) == []
    bad = StateLedger()
    bad.add_event(3, "e3", "kora.note", {**tomb, "extra": 1}, erased=True)
    bad.add_event(
        4,
        "e4",
        "substrate.payload.erased",
        {"erased_seq": 3, "erased_event_id": "e3", "reason": "gdpr"},
    )
    assert [f.kind for f in bad.finish([], _finding)] == ["tombstone_malformed"]
