"""One worker of the parallel bundle check: the fast checks over byte ranges of event lines.

Standard library only, and run by its path (``python -I -S range_worker.py``), so that a
worker starts in ≈ 20 ms instead of importing IsoKron's chain package (≈ 80 ms, a third of
the check of a 100,000-event file). What the checks need from the chain's definition (the
prefix, the erasure event type) comes with the job; the hash-input offsets are defined here
and imported by :mod:`isokron.chain.bundle_v3`. Its other half is
:mod:`isokron.chain.bundle_parallel`, which cuts the file, starts the workers and joins what
they proved.

Protocol (stdin, then stdout): a JSON job line, then one ``START END`` line per range; one
JSON result line per range, in order (see :func:`encode_result`).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import struct
import sys
from collections.abc import Iterator
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


def carries_state(inp: bytes, payload: bytes, erasure_type: bytes) -> bool:
    """Whether an event's row records (or its erasure) go to the state ledger: a payload that
    may hold ``state`` (possibly spelled with escapes), none (erased), or an erasure event."""
    return (
        not payload or b"state" in payload or b"\\u" in payload or inp[TYPE:-DIGEST] == erasure_type
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


def _lines(job: Job, start: int, end: int) -> Iterator[tuple[int, bytes]] | None:
    """(offset, line without its line break) of each line starting in [start, end); None if
    the path is no longer the file the job names."""
    with open(job.path, "rb") as fh:
        if file_identity(fh.fileno()) != job.identity:
            return None
        fh.seek(start)
        data = fh.read(end - start)
    return _split(data, start)


def _split(data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    pos = 0
    for line in data.split(b"\n"):
        if pos >= len(data):
            return
        yield start + pos, line
        pos += len(line) + 1


def check_range(job: Job, start: int, end: int) -> RangeCheck:
    """The fast checks of :func:`isokron.chain.bundle_v3.walk_v3_events` over the event lines
    starting in [start, end).

    The first line's link is not checked here (it depends on the range before); every other
    line must link to the line before it. Stops at the first state line (``{``).
    """
    sha256, unhex, from_bytes, pack = hashlib.sha256, binascii.unhexlify, int.from_bytes, INT64.pack
    prefix, tenant, erasure = job.prefix, job.tenant, job.erasure_type
    count, first_start, seq, head, expect = 0, b"", 0, b"", b""
    items: list[tuple[int, bytes]] = []
    lines = _lines(job, start, end)
    if lines is None:
        return RangeCheck(False, 0, b"", 0, b"", None)
    for offset, line in lines:
        if line[:1] == b"{":
            return RangeCheck(True, count, first_start, seq, head, offset, tuple(items))
        try:
            hex_input, hex_this, payload = line.split(b"\t", 2)
            inp, this = unhex(hex_input), unhex(hex_this)
        except (ValueError, binascii.Error):
            return RangeCheck(False, count, first_start, seq, head, None)
        n = len(inp)
        if count == 0 and n >= EVENT:
            expect = inp[:EVENT]
            if expect[:PREV] != prefix or expect[TENANT:SEQ] != tenant:
                expect = b""
        if not (
            sha256(inp).digest() == this
            and inp[:EVENT] == expect
            and n == FIXED_INPUT_BYTES + from_bytes(inp[TYPE_LEN:TYPE], "big")
            and (not payload or not job.check_payloads or sha256(payload).digest() == inp[-DIGEST:])
        ):
            return RangeCheck(False, count, first_start, seq, head, None)
        if count == 0:
            first_start = expect
        seq, head, count = INT64.unpack(inp[SEQ:EVENT])[0], this, count + 1
        if carries_state(inp, payload, erasure):
            items.append((offset, this))
        try:
            expect = prefix + this + tenant + pack(seq + 1)
        except struct.error:  # no event can follow the largest seq
            expect = b"\xff"
    return RangeCheck(True, count, first_start, seq, head, None, tuple(items))


def encode_result(result: RangeCheck) -> bytes:
    """One result as a JSON line (bytes in hex)."""
    fields: list[Any] = [
        result.ok,
        result.count,
        result.first_start.hex(),
        result.last_seq,
        result.last_hash.hex(),
        result.events_end,
        [[offset, digest.hex()] for offset, digest in result.state_items],
    ]
    return json.dumps(fields).encode("ascii") + b"\n"


def decode_result(line: bytes) -> RangeCheck:
    """A result line back; ValueError or TypeError if it is not one."""
    ok, count, first, seq, last, end, items = json.loads(line)
    return RangeCheck(
        bool(ok),
        int(count),
        bytes.fromhex(first),
        int(seq),
        bytes.fromhex(last),
        None if end is None else int(end),
        tuple((int(offset), bytes.fromhex(digest)) for offset, digest in items),
    )


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """A worker: the job line, then one range per line; one result line per range."""
    job = Job.from_json(stdin.readline())
    for line in stdin:
        lo, hi = (int(x) for x in line.split())
        stdout.write(encode_result(check_range(job, lo, hi)))
        stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
