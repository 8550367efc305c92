"""The v1 byte form: test vectors, an independent re-implementation, and time conversion."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isokron.chain import (
    CHAIN_FORMAT,
    GENESIS_HASH,
    ChainRecord,
    compute_event_hash,
    datetime_to_us,
    event_hash_input,
    format_timestamp,
    make_record,
    payload_digest,
    record_hash,
    us_to_datetime,
    verify_records,
)
from isokron.errors import ChainError

VECTORS_PATH = Path(__file__).parent / "vectors.json"
DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "chain.md"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]


def _independent_hash_input(v: dict[str, Any]) -> bytes:
    """Build hash_input from the spec with struct.pack, sharing no code with isokron.chain."""
    event_type = v["event_type"].encode("utf-8")
    return (
        b"isokron-chain-v1\x00"
        + bytes.fromhex(v["prev_event_hash"])
        + UUID(v["tenant_id"]).bytes
        + struct.pack(">q", v["seq"])
        + UUID(v["event_id"]).bytes
        + UUID(v["actor_id"]).bytes
        + struct.pack(">q", v["occurred_at_us"])
        + struct.pack(">I", len(event_type))
        + event_type
        + bytes.fromhex(v["payload_digest"])
    )


def _kwargs(v: dict[str, Any]) -> dict[str, Any]:
    return {
        "prev_event_hash": bytes.fromhex(v["prev_event_hash"]),
        "tenant_id": UUID(v["tenant_id"]),
        "seq": v["seq"],
        "event_id": UUID(v["event_id"]),
        "actor_id": UUID(v["actor_id"]),
        "occurred_at_us": v["occurred_at_us"],
        "event_type": v["event_type"],
        "payload_digest": bytes.fromhex(v["payload_digest"]),
    }


def _record(v: dict[str, Any]) -> ChainRecord:
    kw = _kwargs(v)
    return ChainRecord(
        tenant_id=kw["tenant_id"],
        seq=kw["seq"],
        event_id=kw["event_id"],
        actor_id=kw["actor_id"],
        event_type=kw["event_type"],
        occurred_at_us=kw["occurred_at_us"],
        payload_digest=kw["payload_digest"],
        prev_event_hash=kw["prev_event_hash"],
        this_event_hash=bytes.fromhex(v["this_event_hash"]),
        payload_text=v["payload_text"],
    )


def test_vectors_file_is_for_this_format() -> None:
    data = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    assert data["format"] == CHAIN_FORMAT
    assert len(VECTORS) >= 3


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_reproduces(v: dict[str, Any]) -> None:
    text = v["payload_text"] if v["payload_text"] is not None else v["erased_payload_text"]
    assert payload_digest(text).hex() == v["payload_digest"]
    assert v["event_type"].encode("utf-8").hex() == v["event_type_utf8"]
    assert datetime_to_us(datetime.fromisoformat(v["occurred_at"])) == v["occurred_at_us"]
    assert format_timestamp(v["occurred_at_us"]) == v["occurred_at"]
    assert event_hash_input(**_kwargs(v)).hex() == v["hash_input"]
    assert compute_event_hash(**_kwargs(v)).hex() == v["this_event_hash"]
    assert hashlib.sha256(bytes.fromhex(v["hash_input"])).hexdigest() == v["this_event_hash"]
    assert record_hash(_record(v)).hex() == v["this_event_hash"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_independent_reimplementation_matches(v: dict[str, Any]) -> None:
    assert _independent_hash_input(v) == event_hash_input(**_kwargs(v))
    assert _independent_hash_input(v).hex() == v["hash_input"]


def test_docs_contain_every_vector_value() -> None:
    docs = DOCS_PATH.read_text(encoding="utf-8")
    for v in VECTORS:
        for key in ("payload_digest", "prev_event_hash", "hash_input", "this_event_hash"):
            assert v[key] in docs, f"docs/chain.md is missing {key} of vector {v['name']}"
        for key in ("tenant_id", "event_id", "actor_id", "event_type", "occurred_at"):
            assert v[key] in docs, f"docs/chain.md is missing {key} of vector {v['name']}"
        assert str(v["occurred_at_us"]) in docs
        if v["payload_text"] is not None:
            assert v["payload_text"] in docs


def test_vectors_one_to_three_form_a_chain() -> None:
    chain = [_record(v) for v in VECTORS[:3]]
    assert chain[0].prev_event_hash == GENESIS_HASH
    report = verify_records(chain)
    assert report.ok, report.problems
    assert report.head_seq == 3
    assert report.head_hash == chain[2].this_event_hash


def test_erased_vector_verifies_without_payload() -> None:
    erased = next(v for v in VECTORS if v["payload_text"] is None)
    report = verify_records([_record(erased)])
    assert report.ok, report.problems


uuids = st.uuids()
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
digests = st.binary(min_size=32, max_size=32)


@given(
    prev=digests,
    tenant=uuids,
    seq=int64,
    event_id=uuids,
    actor=uuids,
    us=int64,
    event_type=st.text(max_size=40),
    digest=digests,
)
def test_independent_reimplementation_matches_random_inputs(
    prev: bytes,
    tenant: UUID,
    seq: int,
    event_id: UUID,
    actor: UUID,
    us: int,
    event_type: str,
    digest: bytes,
) -> None:
    try:
        event_type.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates cannot occur in PostgreSQL text
    v = {
        "prev_event_hash": prev.hex(),
        "tenant_id": str(tenant),
        "seq": seq,
        "event_id": str(event_id),
        "actor_id": str(actor),
        "occurred_at_us": us,
        "event_type": event_type,
        "payload_digest": digest.hex(),
    }
    assert event_hash_input(**_kwargs(v)) == _independent_hash_input(v)


def test_hash_input_length_is_149_plus_event_type() -> None:
    data = event_hash_input(**_kwargs(VECTORS[0]))
    assert len(data) == 149 + len(VECTORS[0]["event_type"].encode("utf-8"))


@pytest.mark.parametrize("field", ["prev_event_hash", "payload_digest"])
@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33)])
def test_wrong_length_hashes_are_rejected(field: str, bad: bytes) -> None:
    kw = _kwargs(VECTORS[0]) | {field: bad}
    with pytest.raises(ChainError, match=field):
        event_hash_input(**kw)


@pytest.mark.parametrize("field", ["seq", "occurred_at_us"])
def test_out_of_range_integers_are_rejected(field: str) -> None:
    kw = _kwargs(VECTORS[0]) | {field: 2**63}
    with pytest.raises(ChainError, match=field):
        event_hash_input(**kw)


def test_payload_digest_rejects_unencodable_text() -> None:
    with pytest.raises(ChainError):
        payload_digest("\ud800")


def test_payload_digest_is_over_exact_text() -> None:
    # Same JSON value, different text: the digest must differ (no re-serialisation).
    assert payload_digest('{"n": 1}') != payload_digest('{"n":1}')


def test_make_record_is_sealed() -> None:
    v = VECTORS[1]
    record = make_record(
        prev_event_hash=bytes.fromhex(v["prev_event_hash"]),
        tenant_id=UUID(v["tenant_id"]),
        seq=v["seq"],
        event_id=UUID(v["event_id"]),
        actor_id=UUID(v["actor_id"]),
        occurred_at_us=v["occurred_at_us"],
        event_type=v["event_type"],
        payload_text=v["payload_text"],
    )
    assert record == _record(v)


@pytest.mark.parametrize(
    ("dt", "us"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 1),
        (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), -1),
        (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), 253_402_300_799_999_999),
        (datetime(1, 1, 1, tzinfo=UTC), -62_135_596_800_000_000),
        (
            datetime(2025, 1, 15, 10, 30, 0, 123_456, tzinfo=timezone(timedelta(hours=1))),
            1_736_933_400_123_456,
        ),
    ],
)
def test_datetime_conversion_is_exact(dt: datetime, us: int) -> None:
    assert datetime_to_us(dt) == us
    back = us_to_datetime(us)
    assert back == dt
    assert back.tzinfo is UTC


@given(st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999))
def test_us_round_trip(us: int) -> None:
    assert datetime_to_us(us_to_datetime(us)) == us


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ChainError, match="timezone"):
        datetime_to_us(datetime(2025, 1, 1))


def test_out_of_range_us_is_rejected() -> None:
    with pytest.raises(ChainError):
        us_to_datetime(2**62)
