"""The hash the database computes is the one docs/chain.md specifies: the SQL byte form
reproduces every test vector, and real appends re-compute in Python bit for bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from isokron.chain import (
    ChainRecord,
    compute_event_hash,
    payload_digest,
    record_hash,
    us_to_datetime,
)
from isokron.substrate import writes

VECTORS_PATH = Path(__file__).resolve().parent.parent / "chain" / "vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]

SQL_HASH_INPUT = """
SELECT hivex_foundation.event_hash_input($1::bytea, $2::uuid, $3::bigint, $4::uuid, $5::uuid,
                                         $6::timestamptz, $7::text, $8::bytea)
"""
SQL_EPOCH_US = "SELECT (extract(epoch FROM $1::timestamptz) * 1000000)::bigint"
# The pools register a JSONB codec, so a jsonb parameter takes a Python value (sent as JSON);
# the ::text::jsonb forms take the payload text itself.
SQL_PAYLOAD_DIGEST = "SELECT sha256(convert_to($1::jsonb::text, 'UTF8'))"
SQL_PAYLOAD_DIGEST_OF_TEXT = "SELECT sha256(convert_to($1::text::jsonb::text, 'UTF8'))"
SQL_JSONB_TEXT = "SELECT $1::text::jsonb::text"


def _text_of(vector: dict[str, Any]) -> str:
    text = vector["payload_text"]
    return vector["erased_payload_text"] if text is None else text


def test_the_vectors_cover_what_they_must() -> None:
    assert len(VECTORS) >= 4
    assert any(v["occurred_at_us"] < 0 for v in VECTORS)  # before 1970
    assert any(not v["event_type"].isascii() for v in VECTORS)
    assert any(v["payload_text"] is None for v in VECTORS)  # an erased payload


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_sql_event_hash_input_matches_the_vector(
    admin_pool: asyncpg.Pool, vector: dict[str, Any]
) -> None:
    occurred_at = us_to_datetime(vector["occurred_at_us"])  # exact: integer microseconds
    async with admin_pool.acquire() as conn:
        # The timestamptz the database holds is exactly the vector's microsecond count.
        assert await conn.fetchval(SQL_EPOCH_US, occurred_at) == vector["occurred_at_us"]
        hash_input = await conn.fetchval(
            SQL_HASH_INPUT,
            bytes.fromhex(vector["prev_event_hash"]),
            UUID(vector["tenant_id"]),
            vector["seq"],
            UUID(vector["event_id"]),
            UUID(vector["actor_id"]),
            occurred_at,
            vector["event_type"],
            bytes.fromhex(vector["payload_digest"]),
        )
        sql_sha = await conn.fetchval("SELECT sha256($1::bytea)", hash_input)
    assert bytes(hash_input).hex() == vector["hash_input"]
    assert hashlib.sha256(hash_input).hexdigest() == vector["this_event_hash"]
    assert bytes(sql_sha).hex() == vector["this_event_hash"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_sql_payload_digest_matches_the_vector(
    admin_pool: asyncpg.Pool, vector: dict[str, Any]
) -> None:
    text = _text_of(vector)
    async with admin_pool.acquire() as conn:
        # The vector's payload text is already in jsonb output form: a round trip keeps it.
        assert await conn.fetchval(SQL_JSONB_TEXT, text) == text
        of_text = await conn.fetchval(SQL_PAYLOAD_DIGEST_OF_TEXT, text)
        # The same payload arriving as a value (JSON with \u escapes) digests the same.
        of_value = await conn.fetchval(SQL_PAYLOAD_DIGEST, json.loads(text))
    assert bytes(of_text).hex() == vector["payload_digest"]
    assert bytes(of_value).hex() == vector["payload_digest"]
    assert payload_digest(text).hex() == vector["payload_digest"]


async def test_jsonb_text_is_not_the_input_text(admin_pool: asyncpg.Pool) -> None:
    # Why the digest is over jsonb::text: key order and spacing are normalised by the database.
    messy = '{"summary":"hello",   "n":1}'
    canonical = await admin_pool.fetchval(SQL_JSONB_TEXT, messy)
    assert canonical == '{"n": 1, "summary": "hello"}'
    digest = await admin_pool.fetchval(SQL_PAYLOAD_DIGEST_OF_TEXT, messy)
    assert bytes(digest) == payload_digest(canonical) != payload_digest(messy)


PAYLOADS = [
    {},
    {"note": "Grüße, 世界 🌍", "nested": {"z": [1, 2.5, None, True], "a": "x"}},
    {"big": 12345678901234567890, "small": -0.000001, "unicode_escape": '\u00e9\t\n"\\'},
]


async def test_real_appends_recompute_in_python_bit_for_bit(
    make_workspace: Any, admin_pool: asyncpg.Pool
) -> None:
    ws = await make_workspace("chain-sql")
    for n, payload in enumerate(PAYLOADS):
        await writes.write(
            admin_pool,
            "append_event",
            ws.workspace_id,
            ws.actors["kora"],
            {"event_type": f"kora.vector.t{n}", "payload": payload},
        )
    rows = await admin_pool.fetch(
        """
        SELECT tenant_id, seq, event_id, actor_id, event_type,
               (extract(epoch FROM occurred_at) * 1000000)::bigint AS occurred_at_us,
               payload::text AS payload_text, payload_digest, prev_event_hash, this_event_hash
        FROM hivex_foundation.event_log WHERE tenant_id = $1 ORDER BY seq
        """,
        ws.tenant_id,
    )
    assert len(rows) == 5 + len(PAYLOADS)
    prev = bytes(32)
    for r in rows:
        record = ChainRecord(
            tenant_id=r["tenant_id"],
            seq=r["seq"],
            event_id=r["event_id"],
            actor_id=r["actor_id"],
            event_type=r["event_type"],
            occurred_at_us=r["occurred_at_us"],
            payload_digest=bytes(r["payload_digest"]),
            prev_event_hash=bytes(r["prev_event_hash"]),
            this_event_hash=bytes(r["this_event_hash"]),
            payload_text=r["payload_text"],
        )
        assert record.prev_event_hash == prev
        assert payload_digest(record.payload_text or "") == record.payload_digest
        assert record_hash(record) == record.this_event_hash
        assert (
            compute_event_hash(
                prev_event_hash=prev,
                tenant_id=ws.tenant_id,
                seq=record.seq,
                event_id=record.event_id,
                actor_id=record.actor_id,
                occurred_at_us=record.occurred_at_us,
                event_type=record.event_type,
                payload_digest=record.payload_digest,
            )
            == record.this_event_hash
        )
        prev = record.this_event_hash
