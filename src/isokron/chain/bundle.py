"""The chain export bundle: a line-oriented file an auditor can verify with nothing else.

Line 1 is a JSON header, then one line per event in seq order, then (version 2 and later) one
JSON line per live state row, so the workspace's state can be checked offline against the chain
(docs/chain.md §6 and §11). Version 3 (what ``isokron export`` writes) carries each event as the
hex of its exact hash input, its stored hash and its payload text, tab-separated
(:mod:`isokron.chain.bundle_v3`); versions 1 and 2, still read, carry JSON event lines::

    {"format": "isokron-chain-export", "version": 2, "workspace_id": ..., "tenant_id": ...,
     "exported_at": ..., "event_count": N, "head_seq": ..., "head_hash": ..., "state_rows": M}
    {"seq": 1, "event_id": ..., "tenant_id": ..., "actor_id": ..., "event_type": ...,
     "occurred_at": ..., "occurred_at_us": ..., "payload_text": ... | null,
     "payload_digest": hex, "prev_event_hash": hex, "this_event_hash": hex}
    {"state_table": "public.kora_policy_registry", "key": "policy.x", "values": [text|null, ...]}

Version 1 files (no state lines, no ``state_rows``) are still read and verified (chain only).

Writing is streaming and atomic: events are spooled to an anonymous temporary file (the header
needs the count and head, which are known only at the end), then header and events are written
to a temporary file beside the target and renamed over it, so a crash never leaves half a file.
Reading is streaming too and rejects malformed lines with a ChainError naming the line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from isokron.chain import bundle_parallel as parallel
from isokron.chain.bundle_parallel import ChainHead
from isokron.chain.bundle_v3 import (
    V3Walk,
    decode_event_line,
    encode_event_line,
    walk_v3_events,
    walk_v3_state,
)
from isokron.chain.hashing import DIGEST_SIZE, ChainRecord, us_to_datetime
from isokron.chain.state import (
    ERASURE_EVENT,
    STATE_TABLES,
    STATE_TABLES_BY_NAME,
    RowProgress,
    StateLedger,
    parse_payload,
)
from isokron.chain.verify import ChainWalk, Checkpoint, Finding, VerifyReport, add_findings
from isokron.errors import ChainError

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "BundleHeader",
    "format_timestamp",
    "read_bundle",
    "read_bundle_with_state",
    "record_to_dict",
    "verify_bundle",
    "write_bundle",
]

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "isokron-chain-export"
BUNDLE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
#: Versions write_bundle can write (2: JSON event lines; 3: lines for the fast verifier).
WRITABLE_VERSIONS = (2, 3)

BundleTarget = str | os.PathLike[str] | IO[bytes] | IO[str]
BundleSource = str | os.PathLike[str] | IO[bytes] | IO[str]
#: Writes event lines to the spool it is given; returns (count, head_seq, head_hash).
EventWriter = Callable[[IO[bytes]], tuple[int, int | None, bytes | None]]

_COPY_BUFFER = 1 << 20
#: Bytes kept for the header line when a version-3 bundle is written in place (it is padded
#: with spaces to this length; a header is ~330 bytes plus the workspace id's length).
HEADER_RESERVE = 1024
_HASH_FIELDS = ("payload_digest", "prev_event_hash", "this_event_hash")
# What a state line's canonical values may be: JSON strings and nulls (json gives exactly these).
_STATE_VALUE_TYPES = frozenset({str, type(None)})
_RECORD_FIELDS = (
    "seq",
    "event_id",
    "tenant_id",
    "actor_id",
    "event_type",
    "occurred_at",
    "occurred_at_us",
    "payload_text",
    *_HASH_FIELDS,
)
_HEADER_FIELDS = (
    "format",
    "version",
    "workspace_id",
    "tenant_id",
    "exported_at",
    "event_count",
    "head_seq",
    "head_hash",
)
# The file is UTF-8; keeping non-ASCII text unescaped lets a person read the payloads.
_json_dumps = json.JSONEncoder(ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class BundleHeader:
    """Line 1 of a bundle: whose chain it is, when it was exported, and what it should hold."""

    workspace_id: str
    tenant_id: UUID
    exported_at: datetime
    event_count: int
    head_seq: int | None
    head_hash: bytes | None
    #: State lines the file holds (version 2); None when it carries no state section (a
    #: version-1 file, or a chain written without rows): then only the chain is verified.
    state_rows: int | None = None
    version: int = BUNDLE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Return the header line as a JSON-ready dict."""
        return {
            "format": BUNDLE_FORMAT,
            "version": self.version,
            "workspace_id": self.workspace_id,
            "tenant_id": str(self.tenant_id),
            "exported_at": _iso_utc(self.exported_at),
            "event_count": self.event_count,
            "head_seq": self.head_seq,
            "head_hash": None if self.head_hash is None else self.head_hash.hex(),
            "state_rows": self.state_rows,
        }


def _iso_utc(dt: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a ``Z`` suffix."""
    if dt.tzinfo is None:
        raise ChainError(f"timestamp must be timezone-aware, got naive {dt.isoformat()}")
    return dt.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def format_timestamp(occurred_at_us: int) -> str:
    """Return the ``occurred_at`` text of a bundle line for microseconds since the epoch."""
    return _iso_utc(us_to_datetime(occurred_at_us))


def record_to_dict(record: ChainRecord) -> dict[str, Any]:
    """Return one bundle event line as a JSON-ready dict (hashes as lowercase hex)."""
    for name in _HASH_FIELDS:
        value = getattr(record, name)
        if not isinstance(value, bytes) or len(value) != DIGEST_SIZE:
            raise ChainError(f"event seq {record.seq}: {name} must be {DIGEST_SIZE} bytes")
    return {
        "seq": record.seq,
        "event_id": str(record.event_id),
        "tenant_id": str(record.tenant_id),
        "actor_id": str(record.actor_id),
        "event_type": record.event_type,
        "occurred_at": format_timestamp(record.occurred_at_us),
        "occurred_at_us": record.occurred_at_us,
        "payload_text": record.payload_text,
        "payload_digest": record.payload_digest.hex(),
        "prev_event_hash": record.prev_event_hash.hex(),
        "this_event_hash": record.this_event_hash.hex(),
    }


# ---------------------------------------------------------------------------------------------
# Writing


def _spool_events(
    records: Iterable[ChainRecord], spool: IO[bytes], version: int
) -> tuple[int, int | None, bytes | None]:
    """Write event lines to ``spool``; return (count, head_seq, head_hash)."""
    count = 0
    head_seq: int | None = None
    head_hash: bytes | None = None
    write = spool.write
    for record in records:
        if version == 3:
            write(encode_event_line(record))
        else:
            write((_json_dumps(record_to_dict(record)) + "\n").encode("utf-8"))
        count += 1
        # The head is the highest seq, matching what the verifier reports.
        if head_seq is None or record.seq > head_seq:
            head_seq, head_hash = record.seq, record.this_event_hash
    return count, head_seq, head_hash


def _copy_out(
    header: BundleHeader, spool: IO[bytes], out: IO[bytes] | IO[str], start: int = 0
) -> None:
    """Write the header line, then the spooled lines (from byte ``start``), to ``out``."""
    header_line = _json_dumps(header.to_dict()) + "\n"
    spool.seek(start)
    if isinstance(out, io.TextIOBase):
        out.write(header_line)
        for line in spool:
            out.write(line.decode("utf-8"))
    else:
        out.write(header_line.encode("utf-8"))  # type: ignore[arg-type]
        shutil.copyfileobj(spool, out, _COPY_BUFFER)  # type: ignore[misc]
    out.flush()


def _fsync_dir(directory: Path) -> None:
    # Durability of the rename needs the directory entry flushed; not every platform allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, header: BundleHeader, spool: IO[bytes], start: int = 0) -> None:
    """Write header + spool to a temp file beside ``path`` and rename it into place."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            _copy_out(header, spool, tmp, start)
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        # Also on KeyboardInterrupt: a half-written temp file must not outlive the attempt.
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_in_place(path: Path, fill: Callable[[IO[bytes]], BundleHeader]) -> BundleHeader:
    """Version 3 to a path: the lines go straight into a temp file beside ``path`` after a
    line of ``HEADER_RESERVE`` spaces, which the header then overwrites (JSON allows the
    spaces left after it); renamed into place. Writing the file once, not spool and copy,
    halves the export's disk writes. A header too long for the reserve (it cannot be, with a
    valid workspace id) falls back to copying."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as tmp:
            tmp.write(b" " * HEADER_RESERVE + b"\n")
            header = fill(tmp)
            line = _json_dumps(header.to_dict()).encode("utf-8")
            if len(line) <= HEADER_RESERVE:
                tmp.seek(0)
                tmp.write(line)
                tmp.flush()
                os.fsync(tmp.fileno())
            else:
                tmp.flush()
                _write_atomic(path, header, tmp, HEADER_RESERVE + 1)
                return header
        os.replace(tmp_name, path)
    finally:
        # Also on KeyboardInterrupt: a half-written temp file must not outlive the attempt.
        Path(tmp_name).unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return header


def _spool_state(rows: Iterable[tuple[str, str, Sequence[str | None]]], spool: IO[bytes]) -> int:
    """Write state lines (table, key, canonical texts) to ``spool``; return how many."""
    count = 0
    for table, key, values in rows:
        line = {"state_table": table, "key": key, "values": list(values)}
        spool.write((_json_dumps(line) + "\n").encode("utf-8"))
        count += 1
    return count


def write_bundle(
    target: BundleTarget,
    *,
    workspace_id: str,
    tenant_id: UUID,
    records: Iterable[ChainRecord] = (),
    exported_at: datetime | None = None,
    state_rows: Iterable[tuple[str, str, Sequence[str | None]]] | None = None,
    write_events: EventWriter | None = None,
    write_state: Callable[[IO[bytes]], int] | None = None,
    version: int = BUNDLE_VERSION,
) -> BundleHeader:
    """Write a chain export bundle and return its header.

    ``target`` is a path (written atomically: temp file in the same directory, then
    ``os.replace``; the file is created with mode 0600 because payloads may be personal data),
    ``"-"`` for stdout, or an open binary or text file object (written as is). ``records``
    is consumed once, in the given order. If it raises, no bundle file is left behind.
    ``write_events`` replaces ``records`` for a fast exporter: it writes version-3 event
    lines it made elsewhere (the database does, see ``audit.EXPORT_EVENTS_COPY_SQL``) to the
    spool it is given and returns (count, head_seq, head_hash); ``write_state`` likewise
    replaces ``state_rows`` with a writer of ready state lines that returns their count.
    ``version`` is 3 (default) or 2.
    """
    if version not in WRITABLE_VERSIONS or (write_events is not None and version != 3):
        raise ChainError(f"cannot write bundle version {version}")
    exported = exported_at if exported_at is not None else datetime.now(UTC)
    path = None if _is_stream(target) else Path(os.fspath(target))  # type: ignore[arg-type]

    def fill(out: IO[bytes]) -> BundleHeader:
        """Write the event and state lines to ``out``; return the header they make."""
        if write_events is not None:
            count, head_seq, head_hash = write_events(out)
        else:
            count, head_seq, head_hash = _spool_events(records, out, version)
        if write_state is not None:
            rows: int | None = write_state(out)
        else:
            rows = None if state_rows is None else _spool_state(state_rows, out)
        return BundleHeader(
            workspace_id=workspace_id,
            tenant_id=tenant_id,
            exported_at=exported,
            event_count=count,
            head_seq=head_seq,
            head_hash=head_hash,
            state_rows=rows,
            version=version,
        )

    if path is not None and version == 3:
        header = _write_in_place(path, fill)
    else:
        with tempfile.TemporaryFile(dir=None if path is None else path.parent) as spool:
            header = fill(spool)
            if path is not None:
                _write_atomic(path, header, spool)
            elif target == "-":
                sys.stdout.flush()  # text printed earlier must not land after the bundle
                _copy_out(header, spool, sys.stdout.buffer)
            else:
                _copy_out(header, spool, target)  # type: ignore[arg-type]
    logger.info(
        "[isokron.chain.bundle] exported %d events of tenant %s (head seq %s) to %s",
        header.event_count,
        tenant_id,
        header.head_seq,
        "stdout" if target == "-" else (path or "a stream"),
    )
    return header


def _is_stream(target: object) -> bool:
    return target == "-" or not isinstance(target, str | os.PathLike)


# ---------------------------------------------------------------------------------------------
# Reading


class _LineParser:
    """Turns bundle lines into values, raising ChainError that names the source and line."""

    __slots__ = ("lineno", "name", "state", "uuid_cache", "version")

    def __init__(self, name: str) -> None:
        self.name = name
        self.lineno = 0
        self.version = BUNDLE_VERSION
        #: State lines met so far: (table, key, canonical texts).
        self.state: list[tuple[str, str, list[str | None]]] = []
        # Tenant and actor ids repeat on every line; parsing each only once is much cheaper.
        self.uuid_cache: dict[str, UUID] = {}

    def fail(self, problem: str) -> ChainError:
        return ChainError(f"{self.name}, line {self.lineno}: {problem}")

    def load(self, raw: bytes | str) -> dict[str, Any]:
        try:
            text = raw if isinstance(raw, str) else raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self.fail(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
        except (ValueError, RecursionError) as exc:  # a number or a nesting too large to parse
            raise self.fail(f"not valid JSON here ({exc})") from exc
        if not isinstance(obj, dict):
            raise self.fail("expected a JSON object")
        return obj

    def require(self, obj: Mapping[str, Any], fields: Sequence[str]) -> None:
        missing = [name for name in fields if name not in obj]
        if missing:
            raise self.fail(f"missing field(s) {', '.join(missing)}")

    def integer(self, obj: Mapping[str, Any], name: str) -> int:
        value = obj[name]
        # bool is an int subclass in Python, but true/false is not a number in the format.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(f"{name} must be an integer, got {value!r:.60}")
        if not -(2**63) <= value < 2**63:
            raise self.fail(f"{name} {value} does not fit in a signed 64-bit integer")
        return value

    def string(self, obj: Mapping[str, Any], name: str) -> str:
        value = obj[name]
        if not isinstance(value, str):
            raise self.fail(f"{name} must be a string, got {value!r:.60}")
        return value

    def uuid(self, obj: Mapping[str, Any], name: str) -> UUID:
        value = self.string(obj, name)
        cached = self.uuid_cache.get(value)
        if cached is not None:
            return cached
        try:
            parsed = UUID(value)
        except ValueError as exc:
            raise self.fail(f"{name} is not a UUID: {value!r:.60}") from exc
        if len(self.uuid_cache) < 4096:
            self.uuid_cache[value] = parsed
        return parsed

    def digest(self, obj: Mapping[str, Any], name: str) -> bytes:
        value = self.string(obj, name)
        if len(value) != 2 * DIGEST_SIZE:
            raise self.fail(
                f"{name} must be {2 * DIGEST_SIZE} hex digits ({DIGEST_SIZE} bytes), "
                f"got {len(value)} characters"
            )
        try:
            return bytes.fromhex(value)
        except ValueError as exc:
            raise self.fail(f"{name} is not hexadecimal: {value!r:.70}") from exc

    def timestamp(self, obj: Mapping[str, Any], name: str) -> datetime:
        value = self.string(obj, name)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise self.fail(f"{name} is not an ISO-8601 timestamp: {value!r:.60}") from exc
        if parsed.tzinfo is None:
            raise self.fail(f"{name} has no timezone: {value!r:.60}")
        return parsed

    def header(self, raw: bytes | str) -> BundleHeader:
        if not raw:
            raise self.fail("the file is empty — not an isokron chain export")
        obj = self.load(raw)
        if obj.get("format") != BUNDLE_FORMAT:
            raise self.fail(
                f"format is {obj.get('format')!r:.60}, expected {BUNDLE_FORMAT!r} — "
                "not an isokron chain export"
            )
        if obj.get("version") not in READABLE_VERSIONS:
            raise self.fail(
                f"version {obj.get('version')!r:.20} is not supported (this reader knows "
                f"versions {', '.join(map(str, READABLE_VERSIONS))})"
            )
        self.require(obj, _HEADER_FIELDS)
        head_seq = None if obj["head_seq"] is None else self.integer(obj, "head_seq")
        head_hash = None if obj["head_hash"] is None else self.digest(obj, "head_hash")
        event_count = self.integer(obj, "event_count")
        if event_count < 0:
            raise self.fail(f"event_count must not be negative, got {event_count}")
        state_rows = None
        self.version = obj["version"]
        if obj["version"] >= 2:
            self.require(obj, ("state_rows",))
            if obj["state_rows"] is not None:
                state_rows = self.integer(obj, "state_rows")
        return BundleHeader(
            workspace_id=self.string(obj, "workspace_id"),
            tenant_id=self.uuid(obj, "tenant_id"),
            exported_at=self.timestamp(obj, "exported_at"),
            event_count=event_count,
            head_seq=head_seq,
            head_hash=head_hash,
            state_rows=state_rows,
            version=obj["version"],
        )

    def state_line(self, obj: Mapping[str, Any]) -> None:
        self.require(obj, ("state_table", "key", "values"))
        values = obj["values"]
        if not isinstance(values, list) or not _STATE_VALUE_TYPES.issuperset(map(type, values)):
            raise self.fail("values must be a list of strings and nulls")
        self.state.append((self.string(obj, "state_table"), self.string(obj, "key"), values))

    def record(self, raw: bytes | str) -> ChainRecord | None:
        """An event line as a record; a state line is kept in ``state`` (returns None)."""
        if self.version == 3 and raw[:1] not in (b"{", "{"):
            if self.state:
                raise self.fail("an event line after the state lines")
            try:
                return decode_event_line(raw if isinstance(raw, bytes) else raw.encode("utf-8"))
            except ChainError as exc:
                raise self.fail(str(exc)) from None
        obj = self.load(raw)
        if "state_table" in obj:
            self.state_line(obj)
            return None
        if self.version == 3:
            raise self.fail("a version-3 event line is not JSON (docs/chain.md §6)")
        if self.state:
            raise self.fail("an event line after the state lines")
        self.require(obj, _RECORD_FIELDS)
        occurred_at_us = self.integer(obj, "occurred_at_us")
        occurred_at = self.timestamp(obj, "occurred_at")
        try:
            expected = us_to_datetime(occurred_at_us)
        except ChainError as exc:
            raise self.fail(str(exc)) from exc
        # Only occurred_at_us is hashed; a disagreeing readable timestamp would mislead readers.
        if occurred_at != expected:
            raise self.fail(
                f"occurred_at {obj['occurred_at']!r} does not match occurred_at_us "
                f"{occurred_at_us} ({_iso_utc(expected)})"
            )
        payload_text = obj["payload_text"]
        if payload_text is not None and not isinstance(payload_text, str):
            raise self.fail("payload_text must be a string or null")
        return ChainRecord(
            tenant_id=self.uuid(obj, "tenant_id"),
            seq=self.integer(obj, "seq"),
            event_id=self.uuid(obj, "event_id"),
            actor_id=self.uuid(obj, "actor_id"),
            event_type=self.string(obj, "event_type"),
            occurred_at_us=occurred_at_us,
            payload_digest=self.digest(obj, "payload_digest"),
            prev_event_hash=self.digest(obj, "prev_event_hash"),
            this_event_hash=self.digest(obj, "this_event_hash"),
            payload_text=payload_text,
        )


def _iter_records(
    fh: IO[bytes] | IO[str], parser: _LineParser, owned: bool
) -> Iterator[ChainRecord]:
    try:
        for raw in fh:
            parser.lineno += 1
            record = parser.record(raw)
            if record is not None:
                yield record
    finally:
        if owned:
            fh.close()


def read_bundle(source: BundleSource) -> tuple[BundleHeader, Iterator[ChainRecord]]:
    """Open a bundle; return its header and a lazy iterator over its events (see
    :func:`read_bundle_with_state` for the state lines)."""
    header, records, _ = read_bundle_with_state(source)
    return header, records


def _open(source: BundleSource) -> tuple[IO[bytes] | IO[str], str, bool]:
    """The file object of a source, its name for messages, and whether it was opened here."""
    if source == "-":
        return sys.stdin.buffer, "<stdin>", False
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            return open(source, "rb"), name, True
        except OSError as exc:
            raise ChainError(f"cannot open bundle {name}: {exc.strerror}") from exc
    name = getattr(source, "name", "<stream>")
    return source, name if isinstance(name, str) else "<stream>", False


def _open_with_header(
    source: BundleSource,
) -> tuple[IO[bytes] | IO[str], _LineParser, BundleHeader, bool]:
    fh, name, owned = _open(source)
    parser = _LineParser(name)
    try:
        parser.lineno = 1
        header = parser.header(fh.readline())
    except BaseException:
        if owned:
            fh.close()
        raise
    return fh, parser, header, owned


def read_bundle_with_state(
    source: BundleSource,
) -> tuple[BundleHeader, Iterator[ChainRecord], list[tuple[str, str, list[str | None]]]]:
    """Open a bundle; return its header and a lazy iterator over its events.

    ``source`` is a path, ``"-"`` for stdin, or an open file object (binary, or text already
    decoded as UTF-8). The header is parsed immediately; each event line is parsed as the
    iterator advances, and a malformed line raises ChainError naming the file and the line
    number. A file opened here is closed when the iterator is exhausted (or garbage-collected).
    """
    fh, parser, header, owned = _open_with_header(source)
    # The state list fills as the records iterator reaches the state lines (after the events).
    return header, _iter_records(fh, parser, owned), parser.state


def _header_findings(header: BundleHeader, report: VerifyReport) -> list[Finding]:
    """Compare what the header promised with what the file actually contained."""
    findings: list[Finding] = []
    if header.event_count != report.events_checked:
        findings.append(
            Finding(
                "header_mismatch",
                None,
                None,
                f"the bundle header says event_count {header.event_count}, but the file "
                f"contains {report.events_checked} events — lines were added or removed",
            )
        )
    if header.head_seq != report.head_seq:
        findings.append(
            Finding(
                "header_mismatch",
                None,
                None,
                f"the bundle header says head_seq {header.head_seq}, but the highest seq in "
                f"the file is {report.head_seq}",
            )
        )
    if header.head_hash != report.head_hash:
        shown = None if header.head_hash is None else header.head_hash.hex()
        found = None if report.head_hash is None else report.head_hash.hex()
        findings.append(
            Finding(
                "header_mismatch",
                header.head_seq,
                None,
                f"the bundle header says head_hash {shown}, but the head event in the file "
                f"has this_event_hash {found}",
            )
        )
    return findings


def _feed_ledger(records: Iterable[ChainRecord], ledger: StateLedger) -> Iterator[ChainRecord]:
    """Pass records through, giving each payload's row records to ``ledger`` on the way.

    A record without payload text is an erased one (exports carry every other payload); a
    payload that does not match its digest is reported by the chain verifier.
    """
    for record in records:
        text = record.payload_text
        if text is None:
            ledger.add_event(record.seq, str(record.event_id), record.event_type, None, erased=True)
        elif "state" in text or "\\u" in text or record.event_type == ERASURE_EVENT:
            # Only a payload that can name "state" (or "carried_state") carries row records;
            # parsing every other payload a second time was a third of verify --bundle's time.
            # A key spelled with \u escapes is parsed too, so nothing hides behind escaping.
            payload = parse_payload(text)
            ledger.add_event(record.seq, str(record.event_id), record.event_type, payload)
        yield record


def _state_finding(kind: str, seq: int | None, message: str) -> Finding:
    return Finding(kind, seq, None, message)


def _state_findings(
    header: BundleHeader, ledger: StateLedger, state: list[tuple[str, str, list[str | None]]]
) -> list[Finding]:
    """The bundle's state lines against the chain's records, and the header bound to them."""
    findings: list[Finding] = []
    if header.state_rows != len(state):
        findings.append(
            _state_finding(
                "header_mismatch",
                None,
                f"the bundle header says state_rows {header.state_rows}, but the file contains "
                f"{len(state)} state lines — lines were added or removed",
            )
        )
    by_table: dict[str, list[tuple[str, list[str | None]]]] = {}
    for table_name, key, values in state:
        by_table.setdefault(table_name, []).append((key, values))
    for unknown in sorted(set(by_table) - set(STATE_TABLES_BY_NAME)):
        findings.append(
            _state_finding("header_mismatch", None, f"state lines of unknown table {unknown}")
        )
    for spec in STATE_TABLES:
        findings += ledger.check_table(spec, by_table.get(spec.name, []), _state_finding)
    findings += ledger.finish(STATE_TABLES, _state_finding)
    # The header's workspace_id and tenant_id are bound by the tenant row the chain proves.
    tenants = {key: values for key, values in by_table.get("hivex_foundation.tenant", [])}
    tenant_row = tenants.get(header.workspace_id)
    if tenant_row is None or tenant_row[0] != str(header.tenant_id) or len(tenants) != 1:
        findings.append(
            _state_finding(
                "header_mismatch",
                None,
                f"the bundle header names workspace {header.workspace_id!r} and tenant "
                f"{header.tenant_id}, but the chain's tenant row says "
                f"{sorted(tenants) or 'nothing'} — the header was edited",
            )
        )
    return findings


def _walk_v3(
    fh: IO[bytes] | IO[str],
    parser: _LineParser,
    walk: ChainWalk,
    progress: Callable[[int], None] | None,
    row_progress: RowProgress | None,
) -> V3Walk:
    """The version-3 event lines through the fast walk; state lines into ``parser.state``."""
    state = V3Walk(StateLedger(row_progress))

    def other(lineno: int, raw: bytes) -> None:
        started = time.perf_counter()
        parser.lineno = lineno
        parser.record(raw)
        state.state_seconds += time.perf_counter() - started

    def fail(lineno: int, problem: str) -> ChainError:
        parser.lineno = lineno
        return parser.fail(problem)

    lines: Iterable[bytes]
    if isinstance(fh, io.TextIOBase):
        lines = (line.encode("utf-8") for line in fh)
    else:
        lines = fh  # type: ignore[assignment]
    head = _check_in_parallel(fh, walk, progress)
    if head is None:
        walk_v3_events(lines, walk, state, on_other=other, fail=fail, progress=progress)
        return state
    started = time.perf_counter()
    walk.head_seq, walk.head_hash, walk.count = head.head_seq, head.head_hash, head.count
    if row_progress is not None:
        row_progress("records", 0)
    walk_v3_state(
        lines,
        head.state_items,
        state,
        events=head.count,
        start=head.events_start,
        first_lineno=2,
        check_payloads=walk.check_payloads,
        on_other=other,
        fail=fail,
        progress=None if row_progress is None else partial(row_progress, "records"),
    )
    state.state_seconds = time.perf_counter() - started
    return state


def _check_in_parallel(
    fh: IO[bytes] | IO[str],
    walk: ChainWalk,
    progress: Callable[[int], None] | None,
) -> ChainHead | None:
    """The chain of a large bundle file proved on one process per CPU
    (:mod:`isokron.chain.bundle_parallel`), or None: then ``fh`` is back where it was and the
    sequential walk runs (not a plain file, a small file, checkpoints, one CPU, a worker
    that failed, or any failed check)."""
    name = getattr(fh, "name", None)
    if (
        # Only an OS file read as it is: the workers read the path's bytes, which for a
        # GzipFile (it has the path as its name too) are not the bytes this reader sees.
        not isinstance(fh, io.BufferedReader)
        or not isinstance(fh.raw, io.FileIO)
        or not isinstance(name, str)
        or walk.checkpoint_seqs()
        or walk.count
        or walk.tenant is None
        or parallel.workers() < 2
        or not fh.seekable()
    ):
        return None
    start = fh.tell()
    try:
        identity = parallel.file_identity(fh.fileno())
        if os.fstat(fh.fileno()).st_size - start < parallel.PARALLEL_MIN_BYTES:
            return None
        if not os.path.isfile(name) or parallel.file_identity_of(name) != identity:
            return None  # e.g. stdin redirected from a file: its name is not its path
        head = parallel.check_in_parallel(
            name,
            identity,
            start,
            walk.tenant.bytes,
            check_payloads=walk.check_payloads,
            progress=progress,
        )
    except (OSError, parallel.WorkerError) as exc:
        logger.warning("[isokron.chain.bundle.parallel] walking on one process: %s", exc)
        head = None
    fh.seek(start)
    return head


def verify_bundle(
    source: BundleSource,
    checkpoints: Sequence[Checkpoint] = (),
    *,
    check_payloads: bool = True,
    progress: Callable[[int], None] | None = None,
    timings: dict[str, float] | None = None,
    row_progress: RowProgress | None = None,
) -> VerifyReport:
    """Verify an exported bundle using nothing but the file (and optional checkpoints).

    The chain, the header (counts and head; in version 2 also workspace and tenant, bound by
    the tenant row the chain records), and in version 2 every state row against its latest
    record (docs/chain.md §11). ``exported_at`` is the exporter's claim and is not proven. A
    structurally malformed file raises ChainError naming the line; a well-formed file that
    fails verification returns a report with ``ok`` False and the findings. Version 3 takes
    the fast path (:mod:`isokron.chain.bundle_v3`); ``progress`` gets the running count of
    events there every 100,000; ``row_progress`` the phase and count of the state check
    (:data:`~isokron.chain.state.RowProgress`). ``timings`` (version 3), when given, receives
    the wall seconds of the chain check (``chain_seconds``) and of the state check
    (``state_seconds``: reading row records and state lines, comparing them), which are timed
    separately.

    A version-3 bundle file of 10 MB or more has its chain checked on one process per CPU
    (:mod:`isokron.chain.bundle_parallel`), with the same findings.
    """
    started = time.perf_counter()
    state_seconds = 0.0
    fh, parser, header, owned = _open_with_header(source)
    walk = ChainWalk(
        check_payloads=check_payloads, expected_tenant=header.tenant_id, checkpoints=checkpoints
    )
    try:
        if header.version == 3:
            v3 = _walk_v3(fh, parser, walk, progress, row_progress)
            ledger, state_seconds = v3.ledger, v3.state_seconds
        else:
            ledger = StateLedger(row_progress)
            for record in _feed_ledger(_iter_records(fh, parser, False), ledger):
                walk.feed(record)
    finally:
        if owned:
            fh.close()
    report = walk.report()
    walked = time.perf_counter()
    chain_seconds = walked - started - state_seconds  # the walk less its row-record work
    findings = _header_findings(header, report)
    if header.state_rows is not None:
        if row_progress is not None:
            row_progress("rows", 0)
        findings += _state_findings(header, ledger, parser.state)
    state_seconds += time.perf_counter() - walked
    logger.info(
        "[isokron.chain.bundle.verify] version=%d events=%d chain_s=%.3f state_s=%.3f",
        header.version,
        report.events_checked,
        chain_seconds,
        state_seconds,
    )
    if timings is not None:
        timings.update(chain_seconds=chain_seconds, state_seconds=state_seconds)
    for finding in findings:
        logger.warning("[isokron.chain.bundle] %s", finding.message)
    return add_findings(report, findings)
