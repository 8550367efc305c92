"""The v1 byte form of IsoKron's per-tenant SHA-256 hash chain.

The PL/pgSQL append function in the substrate computes these hashes inside PostgreSQL; this
module reproduces them bit for bit so that a chain (or an exported bundle of it) can be
verified without trusting the database. The exact layout is specified in ``docs/chain.md``:

    this_event_hash = SHA-256(
        b"isokron-chain-v1" b"\\x00"
        prev_event_hash (32) | tenant_id (16) | seq (int64 BE) | event_id (16) | actor_id (16)
        | occurred_at_us (int64 BE) | len(event_type_utf8) (uint32 BE) | event_type_utf8
        | payload_digest (32) )

    payload_digest = SHA-256(UTF-8 of the payload's jsonb text output)
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from isokron.errors import ChainError

__all__ = [
    "CHAIN_FORMAT",
    "DIGEST_SIZE",
    "GENESIS_HASH",
    "HASH_PREFIX",
    "ChainRecord",
    "compute_event_hash",
    "datetime_to_us",
    "event_hash_input",
    "make_record",
    "payload_digest",
    "record_hash",
    "record_hash_input",
    "us_to_datetime",
]

CHAIN_FORMAT = "isokron-chain-v1"
DIGEST_SIZE = 32
GENESIS_HASH = bytes(DIGEST_SIZE)

# The domain-separation prefix is constant for every event, so it is built once.
HASH_PREFIX = CHAIN_FORMAT.encode("ascii") + b"\x00"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """One row of ``hivex_foundation.event_log`` as far as the chain is concerned.

    ``payload_text`` is the payload's jsonb text, or ``None`` when the payload was erased
    (tombstoned) or not exported; the chain still verifies through ``payload_digest``.
    """

    tenant_id: UUID
    seq: int
    event_id: UUID
    actor_id: UUID
    event_type: str
    occurred_at_us: int
    payload_digest: bytes
    prev_event_hash: bytes
    this_event_hash: bytes
    payload_text: str | None = None


def payload_digest(payload_text: str) -> bytes:
    """Return SHA-256 of the UTF-8 bytes of ``payload_text`` (the payload's jsonb text).

    The text must be exactly what PostgreSQL prints for ``payload::text``; re-serialising the
    JSON with another library changes key order or spacing and therefore the digest.
    """
    try:
        data = payload_text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ChainError(f"payload_text is not valid Unicode text: {exc}") from exc
    return hashlib.sha256(data).digest()


def _check_digest(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) != DIGEST_SIZE:
        raise ChainError(f"{name} must be {DIGEST_SIZE} bytes, got {value!r:.80}")


def _pack_int64(name: str, value: int) -> bytes:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ChainError(f"{name} {value} does not fit in a signed 64-bit integer")
    return _INT64.pack(value)


def event_hash_input(
    *,
    prev_event_hash: bytes,
    tenant_id: UUID,
    seq: int,
    event_id: UUID,
    actor_id: UUID,
    occurred_at_us: int,
    event_type: str,
    payload_digest: bytes,
) -> bytes:
    """Return the exact bytes that SHA-256 is applied to for one event (format v1)."""
    _check_digest("prev_event_hash", prev_event_hash)
    _check_digest("payload_digest", payload_digest)
    try:
        event_type_utf8 = event_type.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ChainError(f"event_type is not valid Unicode text: {exc}") from exc
    if len(event_type_utf8) > _UINT32_MAX:
        raise ChainError("event_type is longer than 2**32-1 bytes")
    return b"".join(
        (
            HASH_PREFIX,
            bytes(prev_event_hash),
            tenant_id.bytes,
            _pack_int64("seq", seq),
            event_id.bytes,
            actor_id.bytes,
            _pack_int64("occurred_at_us", occurred_at_us),
            _UINT32.pack(len(event_type_utf8)),
            event_type_utf8,
            bytes(payload_digest),
        )
    )


def compute_event_hash(
    *,
    prev_event_hash: bytes,
    tenant_id: UUID,
    seq: int,
    event_id: UUID,
    actor_id: UUID,
    occurred_at_us: int,
    event_type: str,
    payload_digest: bytes,
) -> bytes:
    """Return ``this_event_hash`` (32 bytes) for one event (format v1)."""
    return hashlib.sha256(
        event_hash_input(
            prev_event_hash=prev_event_hash,
            tenant_id=tenant_id,
            seq=seq,
            event_id=event_id,
            actor_id=actor_id,
            occurred_at_us=occurred_at_us,
            event_type=event_type,
            payload_digest=payload_digest,
        )
    ).digest()


def record_hash_input(record: ChainRecord) -> bytes:
    """Return the hash input bytes for a record (its stored ``this_event_hash`` is ignored)."""
    return event_hash_input(
        prev_event_hash=record.prev_event_hash,
        tenant_id=record.tenant_id,
        seq=record.seq,
        event_id=record.event_id,
        actor_id=record.actor_id,
        occurred_at_us=record.occurred_at_us,
        event_type=record.event_type,
        payload_digest=record.payload_digest,
    )


def record_hash(record: ChainRecord) -> bytes:
    """Recompute ``this_event_hash`` for a record from its other fields."""
    return hashlib.sha256(record_hash_input(record)).digest()


def make_record(
    *,
    prev_event_hash: bytes,
    tenant_id: UUID,
    seq: int,
    event_id: UUID,
    actor_id: UUID,
    occurred_at_us: int,
    event_type: str,
    payload_text: str,
) -> ChainRecord:
    """Build a correctly sealed record, as the database would append it.

    Used for test fixtures and tools; the database remains the writer of the real chain.
    """
    digest = payload_digest(payload_text)
    this_hash = compute_event_hash(
        prev_event_hash=prev_event_hash,
        tenant_id=tenant_id,
        seq=seq,
        event_id=event_id,
        actor_id=actor_id,
        occurred_at_us=occurred_at_us,
        event_type=event_type,
        payload_digest=digest,
    )
    return ChainRecord(
        tenant_id=tenant_id,
        seq=seq,
        event_id=event_id,
        actor_id=actor_id,
        event_type=event_type,
        occurred_at_us=occurred_at_us,
        payload_digest=digest,
        prev_event_hash=bytes(prev_event_hash),
        this_event_hash=this_hash,
        payload_text=payload_text,
    )


def datetime_to_us(dt: datetime) -> int:
    """Return microseconds since 1970-01-01T00:00:00Z for a timezone-aware datetime.

    Integer arithmetic only: a float round trip would lose microseconds far from 1970.
    """
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ChainError(f"occurred_at must be timezone-aware, got naive {dt.isoformat()}")
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_datetime(us: int) -> datetime:
    """Return the UTC datetime for microseconds since 1970-01-01T00:00:00Z."""
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError as exc:
        raise ChainError(f"occurred_at_us {us} is outside the representable date range") from exc
