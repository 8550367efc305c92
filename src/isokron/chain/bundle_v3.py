"""Bundle version 3 event lines: laid out for a fast verifier that trusts nothing in them.

A version-3 event line is three fields separated by a tab (docs/chain.md §6)::

    HASH_INPUT_HEX \\t THIS_EVENT_HASH_HEX \\t PAYLOAD_TEXT \\n

``HASH_INPUT_HEX`` is the event's whole hash input (§4: prefix, prev hash, tenant, seq, event
id, actor, occurred_at_us, event type, payload digest) in hex; ``PAYLOAD_TEXT`` is the payload's
jsonb text as it is (never holds a line break: jsonb escapes control characters), empty when
the payload was erased. A verifier therefore does per event what the chain needs and nothing
more: un-hex, SHA-256, compare slices; no JSON and no UUID objects. Every field the checks use
is read out of the bytes that are hashed, so the file cannot claim a seq, tenant, link or digest
other than the one its hash covers. An event that fails any fast check is decoded into a
:class:`ChainRecord` and given to :class:`isokron.chain.verify.ChainWalk`, which names the
problem exactly as for versions 1 and 2.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

from isokron.chain import range_worker
from isokron.chain.hashing import DIGEST_SIZE, HASH_PREFIX, ChainRecord, record_hash_input
from isokron.chain.range_worker import EVENT, FIXED_INPUT_BYTES, carries_state
from isokron.chain.state import ERASURE_EVENT, StateLedger, parse_payload
from isokron.chain.verify import ChainWalk
from isokron.errors import ChainError

__all__ = [
    "FIXED_INPUT_BYTES",
    "V3Progress",
    "decode_event_line",
    "encode_event_line",
    "walk_v3_events",
    "walk_v3_state",
]

# Offsets into the hash input (docs/chain.md §4), defined with the parallel check's worker.
_PREV, _TENANT, _SEQ, _EVENT = range_worker.PREV, range_worker.TENANT, range_worker.SEQ, EVENT
_ACTOR, _OCCURRED = range_worker.ACTOR, range_worker.OCCURRED
_TYPE_LEN, _TYPE = range_worker.TYPE_LEN, range_worker.TYPE
_INT64 = range_worker.INT64
_ERASURE_TYPE = ERASURE_EVENT.encode("utf-8")
PROGRESS_EVERY = 100_000

V3Progress = Callable[[int], None]


def encode_event_line(record: ChainRecord) -> bytes:
    """The version-3 line of one record (hash input recomputed from its fields)."""
    if len(record.this_event_hash) != DIGEST_SIZE:
        raise ChainError(f"event seq {record.seq}: this_event_hash must be {DIGEST_SIZE} bytes")
    payload = b"" if record.payload_text is None else record.payload_text.encode("utf-8")
    if b"\n" in payload or b"\r" in payload:
        raise ChainError(
            f"event seq {record.seq}: payload_text holds a line break, which jsonb text never "
            "does — not a payload of the database"
        )
    return b"%s\t%s\t%s\n" % (
        record_hash_input(record).hex().encode("ascii"),
        record.this_event_hash.hex().encode("ascii"),
        payload,
    )


def _layout_problem(inp: bytes) -> str | None:
    """Why ``inp`` is not a well-formed hash input, or None."""
    if len(inp) < FIXED_INPUT_BYTES:
        return f"the hash input is {len(inp)} bytes, shorter than the {FIXED_INPUT_BYTES} fixed"
    if inp[:_PREV] != HASH_PREFIX:
        return "the hash input does not start with the chain's prefix isokron-chain-v1\\0"
    type_len = int.from_bytes(inp[_TYPE_LEN:_TYPE], "big")
    if len(inp) != FIXED_INPUT_BYTES + type_len:
        return (
            f"the hash input is {len(inp)} bytes but its event type length {type_len} makes "
            f"{FIXED_INPUT_BYTES + type_len}"
        )
    return None


def _split(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(hash input, this_event_hash, payload bytes) of a line, or None if it does not parse."""
    parts = line.split(b"\t", 2)
    if len(parts) != 3:
        return None
    try:
        inp, this = binascii.unhexlify(parts[0]), binascii.unhexlify(parts[1])
    except (binascii.Error, ValueError):
        return None
    payload = parts[2]
    if payload[-1:] == b"\n":
        payload = payload[:-1]
    if len(this) != DIGEST_SIZE:
        return None
    return inp, this, payload


def decode_event_line(line: bytes) -> ChainRecord:
    """A version-3 event line as a record; ChainError (without a line number) if malformed."""
    parts = _split(line)
    if parts is None:
        raise ChainError(
            "an event line must be HASH_INPUT_HEX, a tab, THIS_EVENT_HASH_HEX (64 hex digits), "
            "a tab and the payload text"
        )
    inp, this, payload = parts
    return _record(inp, this, payload)


def _record(inp: bytes, this: bytes, payload: bytes) -> ChainRecord:
    problem = _layout_problem(inp)
    if problem is not None:
        raise ChainError(problem)
    try:
        event_type = inp[_TYPE:-DIGEST_SIZE].decode("utf-8")
        text = payload.decode("utf-8") if payload else None
    except UnicodeDecodeError as exc:
        raise ChainError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    return ChainRecord(
        tenant_id=UUID(bytes=inp[_TENANT:_SEQ]),
        seq=_INT64.unpack(inp[_SEQ:_EVENT])[0],
        event_id=UUID(bytes=inp[_EVENT:_ACTOR]),
        actor_id=UUID(bytes=inp[_ACTOR:_OCCURRED]),
        event_type=event_type,
        occurred_at_us=_INT64.unpack(inp[_OCCURRED:_TYPE_LEN])[0],
        payload_digest=inp[-DIGEST_SIZE:],
        prev_event_hash=inp[_PREV:_TENANT],
        this_event_hash=this,
        payload_text=text,
    )


@dataclass(slots=True)
class V3Walk:
    """What a version-3 walk needs besides the chain walk: the state ledger and its timer."""

    ledger: StateLedger
    #: Seconds spent giving payloads to the ledger (the state checks, timed separately).
    state_seconds: float = 0.0


def _feed_ledger(state: V3Walk, inp: bytes, payload: bytes) -> None:
    """Give one event's row records (or its erasure) to the ledger, as bundle._feed_ledger."""
    started = time.perf_counter()
    seq = _INT64.unpack(inp[_SEQ:_EVENT])[0]
    event_type = inp[_TYPE:-DIGEST_SIZE].decode("utf-8", "replace")
    if not payload:
        event_id = str(UUID(bytes=inp[_EVENT:_ACTOR]))
        state.ledger.add_event(seq, event_id, event_type, None, erased=True)
    else:
        # The id is kept only for an erased event.
        state.ledger.add_event(seq, "", event_type, parse_payload(payload))
    state.state_seconds += time.perf_counter() - started


def _expected_start(tenant: bytes, head_seq: int, head_hash: bytes) -> bytes:
    """Bytes 0..72 of the hash input of the event after the head (b"" if none can follow)."""
    try:
        return HASH_PREFIX + head_hash + tenant + _INT64.pack(head_seq + 1)
    except struct.error:
        return b""


def walk_v3_events(
    lines: Iterable[bytes],
    walk: ChainWalk,
    state: V3Walk,
    *,
    on_other: Callable[[int, bytes], None],
    fail: Callable[[int, str], ChainError],
    first_lineno: int = 2,
    progress: V3Progress | None = None,
) -> None:
    """Verify version-3 event lines into ``walk``; lines starting with ``{`` go to ``on_other``.

    ``walk`` must expect the header's tenant. An event passes the fast path only when its
    hash input is well formed, its SHA-256 equals the stored hash, its prev hash is the head's
    hash, its tenant is the walk's, its seq is head + 1, its payload (unless erased) digests to
    the digest in its input, and no checkpoint names its seq; every other event is decoded and
    fed to ``walk``. ``fail`` makes the ChainError for a line (number) that does not parse;
    ``on_other`` gets the other lines with their numbers.
    """
    assert walk.tenant is not None, "a version-3 walk needs the header's tenant"
    sha256, unhex, from_bytes = hashlib.sha256, binascii.unhexlify, int.from_bytes
    pack = _INT64.pack
    tenant, prefix, fixed = walk.tenant.bytes, HASH_PREFIX, FIXED_INPUT_BYTES
    cp_seqs = walk.checkpoint_seqs()
    check = walk.check_payloads
    head_seq, head_hash, count = walk.head_seq, walk.head_hash, walk.count
    # The first 73 bytes the next event's hash input must have: prefix, head hash, tenant, seq.
    expect = _expected_start(tenant, head_seq, head_hash)
    after_state = False
    for lineno, line in enumerate(lines, first_lineno):
        if line[:1] == b"{":
            on_other(lineno, line)
            after_state = True
            continue
        if after_state:
            raise fail(lineno, "an event line after the state lines")
        try:
            hex_input, hex_this, payload = line.split(b"\t", 2)
            inp, this = unhex(hex_input), unhex(hex_this)
        except (ValueError, binascii.Error):
            raise fail(
                lineno, "an event line must be HASH_INPUT_HEX TAB HASH_HEX TAB PAYLOAD"
            ) from None
        if payload[-1:] == b"\n":
            payload = payload[:-1]
        n = len(inp)
        if (
            sha256(inp).digest() == this
            and inp[:_EVENT] == expect
            and n == fixed + from_bytes(inp[_TYPE_LEN:_TYPE], "big")
            and (not payload or not check or sha256(payload).digest() == inp[n - DIGEST_SIZE :])
            and (not cp_seqs or head_seq + 1 not in cp_seqs)
        ):
            head_seq, head_hash, count = head_seq + 1, this, count + 1
            try:
                expect = prefix + this + tenant + pack(head_seq + 1)
            except struct.error:  # the next seq does not fit in 64 bits: no event can follow
                expect = b""
        else:
            if len(this) != DIGEST_SIZE:
                raise fail(lineno, f"this_event_hash must be {2 * DIGEST_SIZE} hex digits")
            try:
                record = _record(inp, this, payload)
            except ChainError as exc:
                raise fail(lineno, str(exc)) from None
            walk.head_seq, walk.head_hash, walk.count = head_seq, head_hash, count
            walk.feed(record)
            head_seq, head_hash, count = walk.head_seq, walk.head_hash, walk.count
            expect = _expected_start(tenant, head_seq, head_hash)
        if _carries_state(inp, payload):
            _feed_ledger(state, inp, payload)
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count)
    walk.head_seq, walk.head_hash, walk.count = head_seq, head_hash, count


def _carries_state(inp: bytes, payload: bytes) -> bool:
    return carries_state(inp, payload, _ERASURE_TYPE)


_CHANGED = "the line changed while the bundle was being verified"


def walk_v3_state(
    lines: Iterable[bytes],
    proved: Sequence[tuple[int, bytes]],
    state: V3Walk,
    *,
    events: int,
    start: int,
    first_lineno: int,
    check_payloads: bool,
    on_other: Callable[[int, bytes], None],
    fail: Callable[[int, str], ChainError],
    progress: V3Progress | None = None,
) -> None:
    """The state part of :func:`walk_v3_events` alone, for a chain already proved elsewhere
    (in parallel, :mod:`isokron.chain.bundle_parallel`): ``lines`` are the file's lines from
    byte ``start`` (line ``first_lineno``) on, ``events`` of them event lines; ``proved`` the
    (offset, stored hash) of each event that carries state, in order.

    This is a second reading of the file. Each line it gives the ledger must hash again to
    the hash proved at its offset (and, with ``check_payloads``, its payload to its digest),
    so the ledger only ever gets bytes the chain check proved; an event line it does not use
    is only counted. A file rewritten in between therefore cannot make the state check read
    unproved bytes: it fails, or the verdict is the one on the bytes proved.
    The lines after the events go to ``on_other`` and must all be state lines. ``progress``
    gets the running count of event lines read every :data:`PROGRESS_EVERY`."""
    sha256, unhex = hashlib.sha256, binascii.unhexlify
    todo = iter(proved)
    offset, this = next(todo, (-1, b""))
    pos, after_state, seen = start, False, 0
    for lineno, line in enumerate(lines, first_lineno):
        at, pos = pos, pos + len(line)
        if line[:1] != b"{" and not after_state:
            seen += 1
            if progress is not None and seen % PROGRESS_EVERY == 0:
                progress(seen)
        if line[:1] == b"{":
            on_other(lineno, line)
            after_state = True
        elif after_state:
            raise fail(lineno, "an event line after the state lines")
        elif at == offset:
            try:
                hex_input, _, payload = line.split(b"\t", 2)
                inp = unhex(hex_input)
            except (ValueError, binascii.Error):
                raise fail(lineno, _CHANGED) from None
            payload = payload[:-1] if payload[-1:] == b"\n" else payload
            if sha256(inp).digest() != this or (
                check_payloads and payload and sha256(payload).digest() != inp[-DIGEST_SIZE:]
            ):
                raise fail(lineno, _CHANGED)
            _feed_ledger(state, inp, payload)
            offset, this = next(todo, (-1, b""))
    if offset != -1 or seen != events:
        raise ChainError("the bundle changed while it was being verified")
