"""One worker of the parallel bundle check: the fast checks over byte ranges of event lines.

Standard library only, and run by its path (``python -I -S range_worker.py``), so that a
worker starts in ≈ 20 ms instead of importing IsoKron's chain package (≈ 80 ms, a third of
the check of a 100,000-event file). What the checks need from the chain's definition (the
prefix, the erasure event type) comes with the job; the hash-input offsets are defined here
and imported by :mod:`isokron.chain.bundle_v3`. Its other half is
:mod:`isokron.chain.bundle_parallel`, which cuts the file, starts the workers and joins what
they proved.

Protocol (stdin, then stdout): a JSON job line, then one ``START END`` line per range; one
result per range, in order (see :func:`encode_result`).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass
from typing import IO, Any

# Offsets into an event's hash input (docs/chain.md §4): prefix 0-16, prev hash 17-48, tenant
# 49-64, seq 65-72, event id 73-88, actor 89-104, occurred_at_us 105-112, type length 113-116,
# type from 117, payload digest the last 32 bytes.
PREV, TENANT, SEQ, EVENT = 17, 49, 65, 73
ACTOR, OCCURRED, TYPE_LEN, TYPE = 89, 105, 113, 117
DIGEST = hashlib.sha256().digest_size
#: Bytes of a hash input besides the event type's UTF-8 bytes.
FIXED_INPUT_BYTES = TYPE + DIGEST
INT64 = struct.Struct(">q")
INT32 = struct.Struct(">I")
#: A state item of a result: its line's file offset and stored hash.
STATE_ITEM = struct.Struct(">q32s")
_BRACE = ord("{")


def carries_state(
    inp: bytes, text: bytes, erasure_type: bytes, start: int = 0, end: int | None = None
) -> bool:
    """Whether an event's row records (or its erasure) go to the state ledger: a payload that
    may hold ``state`` (possibly spelled with escapes), none (erased), or an erasure event.

    The payload is ``text[start:end]``, searched where it lies (a worker's range holds many)."""
    stop = len(text) if end is None else end
    return (
        start >= stop
        or text.find(b"state", start, stop) >= 0
        or text.find(b"\\u", start, stop) >= 0
        or inp[TYPE:-DIGEST] == erasure_type
    )


@dataclass(frozen=True, slots=True)
class RangeCheck:
    """What one range of event lines proved."""

    #: Every event line of the range passed the fast checks, and none was malformed.
    ok: bool
    #: Event lines in the range (those before the first state line).
    count: int
    #: Bytes 0..72 of the first event's hash input (prefix, prev hash, tenant, seq); b"" if none.
    first_start: bytes
    #: seq and stored hash of the last event line of the range.
    last_seq: int
    last_hash: bytes
    #: File offset of the first state line, when this range reaches it.
    events_end: int | None
    #: (file offset, stored hash) of each event whose row records go to the state ledger.
    state_items: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    """What every range of one check shares."""

    path: str
    #: (device, inode) of the file the verifier has open: another file at the path is refused.
    identity: tuple[int, int]
    tenant: bytes
    check_payloads: bool
    prefix: bytes
    erasure_type: bytes

    def to_json(self) -> str:
        return json.dumps(
            {
                "path": self.path,
                "identity": list(self.identity),
                "tenant": self.tenant.hex(),
                "check_payloads": self.check_payloads,
                "prefix": self.prefix.hex(),
                "erasure_type": self.erasure_type.hex(),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        raw = json.loads(text)
        return cls(
            path=str(raw["path"]),
            identity=(int(raw["identity"][0]), int(raw["identity"][1])),
            tenant=bytes.fromhex(raw["tenant"]),
            check_payloads=bool(raw["check_payloads"]),
            prefix=bytes.fromhex(raw["prefix"]),
            erasure_type=bytes.fromhex(raw["erasure_type"]),
        )


def file_identity(fd: int) -> tuple[int, int]:
    """(device, inode) of an open file: a worker checks it reads the file the verifier has
    open, not another one put at its path meanwhile."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _read_range(job: Job, start: int, end: int) -> bytes | None:
    """The bytes [start, end) of the job's file; None if the path is no longer the file the
    job names."""
    with open(job.path, "rb") as fh:
        if file_identity(fh.fileno()) != job.identity:
            return None
        fh.seek(start)
        return fh.read(end - start)


def check_range(job: Job, start: int, end: int) -> RangeCheck:
    """The fast checks of :func:`isokron.chain.bundle_v3.walk_v3_events` over the event lines
    starting in [start, end).

    The first line's link is not checked here (it depends on the range before); every other
    line must link to the line before it. Stops at the first state line (``{``). The range is
    read at once and each line's fields are found in it by offset: only the two hex fields are
    copied (to be un-hexed), the payload is hashed and searched where it lies.
    """
    data = _read_range(job, start, end)
    if data is None:
        return RangeCheck(False, 0, b"", 0, b"", None)
    sha256, unhex, find, view = hashlib.sha256, binascii.unhexlify, data.find, memoryview(data)
    seq_at, type_len_at, pack = INT64.unpack_from, INT32.unpack_from, INT64.pack
    prefix, tenant, erasure, check_payloads = (
        job.prefix,
        job.tenant,
        job.erasure_type,
        job.check_payloads,
    )
    count, first_start, seq, head, expect = 0, b"", 0, b"", b""
    items: list[tuple[int, bytes]] = []
    pos, size = 0, len(data)
    while pos < size:
        nl = find(b"\n", pos)
        if nl < 0:
            nl = size
        if data[pos] == _BRACE:
            return RangeCheck(True, count, first_start, seq, head, start + pos, tuple(items))
        tab = find(b"\t", pos, nl)
        tab2 = find(b"\t", tab + 1, nl) if tab >= 0 else -1
        if tab2 < 0:
            return RangeCheck(False, count, first_start, seq, head, None)
        try:
            inp, this = unhex(data[pos:tab]), unhex(data[tab + 1 : tab2])
        except (ValueError, binascii.Error):
            return RangeCheck(False, count, first_start, seq, head, None)
        n, erased = len(inp), tab2 + 1 == nl
        if count == 0 and n >= EVENT:
            expect = inp[:EVENT]
            if expect[:PREV] != prefix or expect[TENANT:SEQ] != tenant:
                expect = b""
        if not (
            n >= TYPE
            and sha256(inp).digest() == this
            and inp[:EVENT] == expect
            and n == FIXED_INPUT_BYTES + type_len_at(inp, TYPE_LEN)[0]
            and (
                erased
                or not check_payloads
                or sha256(view[tab2 + 1 : nl]).digest() == inp[-DIGEST:]
            )
        ):
            return RangeCheck(False, count, first_start, seq, head, None)
        if count == 0:
            first_start = expect
        seq, head, count = seq_at(inp, SEQ)[0], this, count + 1
        if carries_state(inp, data, erasure, tab2 + 1, nl):
            items.append((start + pos, this))
        try:
            expect = prefix + this + tenant + pack(seq + 1)
        except struct.error:  # no event can follow the largest seq
            expect = b"\xff"
        pos = nl + 1
    return RangeCheck(True, count, first_start, seq, head, None, tuple(items))


def encode_result(result: RangeCheck) -> bytes:
    """One result: a JSON line (bytes in hex) ending with the number of state items, then
    each item as :data:`STATE_ITEM` (a range may name thousands: binary is a third of the
    bytes of hex in JSON and unpacks at once)."""
    fields: list[Any] = [
        result.ok,
        result.count,
        result.first_start.hex(),
        result.last_seq,
        result.last_hash.hex(),
        result.events_end,
        len(result.state_items),
    ]
    items = b"".join(STATE_ITEM.pack(offset, digest) for offset, digest in result.state_items)
    return json.dumps(fields).encode("ascii") + b"\n" + items


def read_result(stream: IO[bytes]) -> RangeCheck | None:
    """The next result from ``stream``; None at its end, ValueError or TypeError if what it
    holds is not a result."""
    line = stream.readline()
    if not line:
        return None
    ok, count, first, seq, last, end, n = json.loads(line)
    size = STATE_ITEM.size * int(n)
    blob = stream.read(size)
    if len(blob) != size:
        raise ValueError(f"{len(blob)} bytes of state items where {size} were announced")
    return RangeCheck(
        bool(ok),
        int(count),
        bytes.fromhex(first),
        int(seq),
        bytes.fromhex(last),
        None if end is None else int(end),
        tuple(STATE_ITEM.iter_unpack(blob)),
    )


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """A worker: the job line, then one range per line; one result per range."""
    job = Job.from_json(stdin.readline())
    for line in stdin:
        lo, hi = (int(x) for x in line.split())
        stdout.write(encode_result(check_range(job, lo, hi)))
        stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
