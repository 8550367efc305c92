"""Streaming verification of one tenant's hash chain.

``verify_records`` walks records ordered by seq in one pass and reports every way the chain can
be broken: a wrong start (``genesis``), missing events (``seq_gap``), repeated or out-of-order
seqs (``fork``), a prev hash that does not point at its predecessor (``broken_link``), a stored
hash that does not match the recomputed one (``hash_mismatch``), a payload that does not match
its digest (``payload_mismatch``), an event of another tenant (``tenant_mismatch``) and a chain
that disagrees with a previously saved checkpoint (``checkpoint_mismatch``). Bundle checks add
``header_mismatch``.

Memory stays O(1) in the number of events: only the current head, the anomalies seen so far
and the (capped) findings are kept, so millions of events verify in constant space.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from isokron.chain.hashing import (
    DIGEST_SIZE,
    GENESIS_HASH,
    HASH_PREFIX,
    ChainRecord,
    payload_digest,
    record_hash,
)
from isokron.errors import ChainError

__all__ = [
    "FINDING_KINDS",
    "ChainWalk",
    "MAX_PROBLEMS",
    "Checkpoint",
    "CheckpointResult",
    "Finding",
    "SuspectEvent",
    "VerifyReport",
    "add_findings",
    "report_from_suspects",
    "verify_against_checkpoint",
    "verify_records",
]

logger = logging.getLogger(__name__)

FINDING_KINDS = (
    "genesis",
    "seq_gap",
    "fork",
    "broken_link",
    "hash_mismatch",
    "payload_mismatch",
    "tenant_mismatch",
    "checkpoint_mismatch",
    "header_mismatch",
)
MAX_PROBLEMS = 100

_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")
# event_type values repeat endlessly; caching their encoded form saves an encode per event,
# bounded so that a hostile input with unique types cannot grow memory without limit.
_EVENT_TYPE_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in a chain, with a sentence a person can act on."""

    kind: str
    seq: int | None
    event_id: UUID | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "kind": self.kind,
            "seq": self.seq,
            "event_id": None if self.event_id is None else str(self.event_id),
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A (tenant, seq, this_event_hash) triple saved outside the database.

    A chain that is rewritten consistently from some point on still links correctly, so only a
    hash remembered elsewhere reveals the rewrite.
    """

    tenant_id: UUID
    seq: int
    this_event_hash: bytes

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (hash as lowercase hex)."""
        return {
            "tenant_id": str(self.tenant_id),
            "seq": self.seq,
            "this_event_hash": self.this_event_hash.hex(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Parse a dict produced by ``to_dict``; raise ChainError when it is malformed."""
        if not isinstance(data, Mapping):
            raise ChainError("checkpoint must be a JSON object")
        try:
            tenant_raw, seq, hash_raw = data["tenant_id"], data["seq"], data["this_event_hash"]
        except KeyError as exc:
            raise ChainError(f"checkpoint is missing field {exc.args[0]!r}") from exc
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ChainError(f"checkpoint seq must be a positive integer, got {seq!r}")
        try:
            tenant_id = UUID(str(tenant_raw))
        except ValueError as exc:
            raise ChainError(f"checkpoint tenant_id is not a UUID: {tenant_raw!r}") from exc
        try:
            digest = bytes.fromhex(hash_raw) if isinstance(hash_raw, str) else b""
        except ValueError:
            digest = b""
        if len(digest) != DIGEST_SIZE:
            raise ChainError(f"checkpoint this_event_hash must be 64 hex digits, got {hash_raw!r}")
        return cls(tenant_id=tenant_id, seq=seq, this_event_hash=digest)


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """Whether one checkpoint passed to ``verify_records`` was confirmed."""

    checkpoint: Checkpoint
    finding: Finding | None

    @property
    def ok(self) -> bool:
        """True when the chain contains the checkpoint's seq with the checkpoint's hash."""
        return self.finding is None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "checkpoint": self.checkpoint.to_dict(),
            "ok": self.ok,
            "finding": None if self.finding is None else self.finding.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of verifying one chain.

    ``problems`` holds at most ``MAX_PROBLEMS`` findings; ``problem_count`` is the true total.
    ``head_seq``/``head_hash`` describe the highest seq seen (None for an empty chain).
    """

    ok: bool
    events_checked: int
    head_seq: int | None
    head_hash: bytes | None
    first_problem: Finding | None
    problems: tuple[Finding, ...]
    tenant_id: UUID | None = None
    problem_count: int = 0
    checkpoints: tuple[CheckpointResult, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (hashes as lowercase hex)."""
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "tenant_id": None if self.tenant_id is None else str(self.tenant_id),
            "head_seq": self.head_seq,
            "head_hash": None if self.head_hash is None else self.head_hash.hex(),
            "problem_count": self.problem_count,
            "first_problem": None if self.first_problem is None else self.first_problem.to_dict(),
            "problems": [p.to_dict() for p in self.problems],
            "checkpoints": [c.to_dict() for c in self.checkpoints],
        }


def _short(digest: bytes | None) -> str:
    return "none" if digest is None else digest.hex()[:16] + "…"


def _where(record: ChainRecord) -> str:
    return f"event seq {record.seq} (event_id {record.event_id})"


class _Findings:
    """Collects findings, keeping the first MAX_PROBLEMS and counting the rest."""

    __slots__ = ("count", "items")

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.count = 0

    def add(self, kind: str, record: ChainRecord | None, message: str) -> Finding:
        finding = Finding(
            kind=kind,
            seq=None if record is None else record.seq,
            event_id=None if record is None else record.event_id,
            message=message,
        )
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(finding)
        return finding


class _SeqTracker:
    """Slow path for records whose seq is not head+1; remembers only the anomalies.

    Seqs 1..head that are not inside a recorded gap were all seen, so repeats are detected
    without storing every seq; seqs that later fill a gap are remembered individually.
    """

    __slots__ = ("gap_highs", "gap_lows", "late")

    def __init__(self) -> None:
        # Gaps are only ever opened above the current head, so both lists stay sorted.
        self.gap_lows: list[int] = []
        self.gap_highs: list[int] = []
        self.late: set[int] = set()

    def _add_gap(self, lo: int, hi: int) -> None:
        self.gap_lows.append(lo)
        self.gap_highs.append(hi)

    def _in_gap(self, seq: int) -> bool:
        index = bisect_right(self.gap_lows, seq) - 1
        return index >= 0 and seq <= self.gap_highs[index]

    def handle(self, record: ChainRecord, head_seq: int, first: bool, out: _Findings) -> bool:
        """Report the anomaly; return True when the record becomes the new head."""
        seq = record.seq
        if first:
            out.add(
                "genesis",
                record,
                f"the chain starts at {_where(record)}, not at seq 1 — "
                "the earliest events are missing or the chain was cut",
            )
            if seq > 1:
                self._add_gap(1, seq - 1)
            return True
        if seq > head_seq:
            lo, hi = head_seq + 1, seq - 1
            missing = f"seq {lo} is" if lo == hi else f"seqs {lo} to {hi} are"
            out.add(
                "seq_gap",
                record,
                f"{_where(record)} follows seq {head_seq} — {missing} missing "
                "(deleted, or left out of the export)",
            )
            self._add_gap(lo, hi)
            return True
        if seq in self.late or not self._in_gap(seq):
            out.add(
                "fork",
                record,
                f"{_where(record)}: seq {seq} appears more than once — two events claim "
                "the same place in the chain (a fork, or a duplicated event)",
            )
        else:
            self.late.add(seq)
            out.add(
                "fork",
                record,
                f"{_where(record)} arrives after seq {head_seq} — the chain goes backwards "
                "(events swapped, reordered or re-inserted)",
            )
        return False


def _encode_event_type(event_type: str) -> bytes:
    """Return the length-prefixed UTF-8 form of an event type as it enters the hash."""
    data = event_type.encode("utf-8")
    return _UINT32.pack(len(data)) + data


def _slow_hash_check(record: ChainRecord, out: _Findings) -> None:
    """Explain why a record's hash cannot be recomputed (malformed fields)."""
    try:
        record_hash(record)
    except (ChainError, struct.error, TypeError, AttributeError, ValueError) as exc:
        out.add(
            "hash_mismatch",
            record,
            f"{_where(record)}: the hash cannot be recomputed because a field is malformed "
            f"({exc}) — the event was damaged or forged",
        )
        return
    out.add(
        "hash_mismatch",
        record,
        f"{_where(record)}: stored this_event_hash does not match the recomputed hash — "
        "the event was edited after it was written",
    )


def _slow_payload_check(record: ChainRecord, out: _Findings) -> None:
    """Report a payload that cannot be digested or whose digest differs."""
    try:
        digest = payload_digest(record.payload_text or "")
    except ChainError as exc:
        out.add(
            "payload_mismatch",
            record,
            f"{_where(record)}: the payload text cannot be digested ({exc})",
        )
        return
    if digest != record.payload_digest:
        out.add(
            "payload_mismatch",
            record,
            f"{_where(record)}: the payload text does not match payload_digest — "
            "the payload was edited after it was written",
        )


class _CheckpointTracker:
    """Confirms checkpoints while streaming; only the checkpoints themselves are kept."""

    __slots__ = ("by_seq", "checkpoints", "results", "seen")

    def __init__(self, checkpoints: Sequence[Checkpoint]) -> None:
        self.checkpoints = tuple(checkpoints)
        self.by_seq: dict[int, list[int]] = {}
        for index, cp in enumerate(self.checkpoints):
            self.by_seq.setdefault(cp.seq, []).append(index)
        self.results: list[Finding | None] = [None] * len(self.checkpoints)
        self.seen = [False] * len(self.checkpoints)

    def see(self, record: ChainRecord, out: _Findings) -> None:
        for index in self.by_seq.get(record.seq, ()):
            cp = self.checkpoints[index]
            self.seen[index] = True
            if self.results[index] is not None:
                continue  # already failed; one finding per checkpoint is enough
            if cp.tenant_id != record.tenant_id:
                self.results[index] = out.add(
                    "checkpoint_mismatch",
                    record,
                    f"{_where(record)} belongs to tenant {record.tenant_id}, but the "
                    f"checkpoint at seq {cp.seq} is for tenant {cp.tenant_id}",
                )
            elif cp.this_event_hash != record.this_event_hash:
                self.results[index] = out.add(
                    "checkpoint_mismatch",
                    record,
                    f"{_where(record)}: this_event_hash is {_short(record.this_event_hash)} "
                    f"but the checkpoint taken at seq {cp.seq} records "
                    f"{_short(cp.this_event_hash)} — the chain was rewritten after the "
                    "checkpoint was taken",
                )

    def finish(self, head_seq: int | None, out: _Findings) -> tuple[CheckpointResult, ...]:
        for index, cp in enumerate(self.checkpoints):
            if not self.seen[index]:
                self.results[index] = out.add(
                    "checkpoint_mismatch", None, _missing_checkpoint(cp, head_seq)
                )
        return tuple(
            CheckpointResult(cp, finding)
            for cp, finding in zip(self.checkpoints, self.results, strict=True)
        )


def _missing_checkpoint(cp: Checkpoint, head_seq: int | None) -> str:
    prefix = f"the checkpoint at seq {cp.seq} ({_short(cp.this_event_hash)}) cannot be confirmed"
    if head_seq is None:
        return f"{prefix}: the chain is empty — all events were removed or none were exported"
    if cp.seq > head_seq:
        return (
            f"{prefix}: the chain ends at seq {head_seq} — events were removed from the end "
            "(truncation) or the chain was rolled back"
        )
    return f"{prefix}: seq {cp.seq} is missing from the chain"


class ChainWalk:
    """One streaming verification: ``feed`` records in seq order, then ``report``.

    The head (``head_seq``, ``head_hash``) and ``count`` are public so that a fast reader may
    advance them itself over events it has proven flawless (the same conditions under which
    ``feed`` would find nothing and move the head) and ``feed`` only the rest
    (:mod:`isokron.chain.bundle_v3`).
    """

    __slots__ = (
        "check_payloads",
        "count",
        "cp_tracker",
        "et_cache",
        "head_hash",
        "head_seq",
        "out",
        "seqs",
        "tenant",
        "tenant_bytes",
    )

    def __init__(
        self,
        *,
        check_payloads: bool = True,
        expected_tenant: UUID | None = None,
        checkpoints: Sequence[Checkpoint] = (),
    ) -> None:
        self.out = _Findings()
        self.seqs = _SeqTracker()
        self.cp_tracker = _CheckpointTracker(checkpoints) if checkpoints else None
        self.check_payloads = check_payloads
        self.et_cache: dict[str, bytes] = {}
        self.tenant = expected_tenant
        self.tenant_bytes = b"" if expected_tenant is None else expected_tenant.bytes
        self.head_seq = 0
        self.head_hash = GENESIS_HASH
        self.count = 0

    def checkpoint_seqs(self) -> frozenset[int]:
        """The seqs a checkpoint names (events there must go through ``feed``)."""
        return frozenset(self.cp_tracker.by_seq) if self.cp_tracker is not None else frozenset()

    def _tenant_bytes(self, record: ChainRecord) -> bytes:
        tenant_id = record.tenant_id
        if self.tenant is None:
            self.tenant, self.tenant_bytes = tenant_id, tenant_id.bytes
        if tenant_id is self.tenant or tenant_id == self.tenant:
            return self.tenant_bytes
        self.out.add(
            "tenant_mismatch",
            record,
            f"{_where(record)} belongs to tenant {tenant_id}, but this chain is tenant "
            f"{self.tenant} — an event of another tenant's chain was mixed in",
        )
        # A non-UUID tenant cannot hash correctly; the hash check then reports it.
        return getattr(tenant_id, "bytes", b"")

    def _link(self, record: ChainRecord) -> None:
        seq, out = record.seq, self.out
        if seq == self.head_seq + 1 and self.count:
            if record.prev_event_hash != self.head_hash:
                out.add(
                    "broken_link",
                    record,
                    f"{_where(record)}: prev_event_hash does not equal the this_event_hash of "
                    f"seq {self.head_seq} — an event before it was edited, removed or inserted",
                )
            self.head_seq, self.head_hash = seq, record.this_event_hash
        elif seq == 1 and not self.count:
            if record.prev_event_hash != GENESIS_HASH:
                out.add(
                    "genesis",
                    record,
                    f"{_where(record)}: prev_event_hash is {_short(record.prev_event_hash)} "
                    "instead of 32 zero bytes — the first event must link to the genesis hash",
                )
            self.head_seq, self.head_hash = seq, record.this_event_hash
        elif self.seqs.handle(record, self.head_seq, not self.count, out):
            self.head_seq, self.head_hash = seq, record.this_event_hash

    def _hash_ok(self, record: ChainRecord, tid_bytes: bytes) -> bool:
        try:
            event_type = record.event_type
            et_bytes = self.et_cache.get(event_type)
            if et_bytes is None:
                et_bytes = _encode_event_type(event_type)
                if len(self.et_cache) < _EVENT_TYPE_CACHE_LIMIT:
                    self.et_cache[event_type] = et_bytes
            prev, digest = record.prev_event_hash, record.payload_digest
            computed = hashlib.sha256(
                b"".join(
                    (
                        HASH_PREFIX,
                        prev,
                        tid_bytes,
                        _INT64.pack(record.seq),
                        record.event_id.bytes,
                        record.actor_id.bytes,
                        _INT64.pack(record.occurred_at_us),
                        et_bytes,
                        digest,
                    )
                )
            ).digest()
        except (struct.error, UnicodeError, TypeError, AttributeError, ValueError):
            return False
        return (
            computed == record.this_event_hash
            and len(prev) == DIGEST_SIZE
            and len(digest) == DIGEST_SIZE
        )

    def feed(self, record: ChainRecord) -> None:
        """Check one record against the head and itself; move the head."""
        tid_bytes = self._tenant_bytes(record)
        self._link(record)
        if not self._hash_ok(record, tid_bytes):
            _slow_hash_check(record, self.out)
        text = record.payload_text
        if self.check_payloads and text is not None:
            try:
                payload_ok = hashlib.sha256(text.encode()).digest() == record.payload_digest
            except UnicodeError:
                payload_ok = False
            if not payload_ok:
                _slow_payload_check(record, self.out)
        if self.cp_tracker is not None:
            self.cp_tracker.see(record, self.out)
        self.count += 1

    def report(self) -> VerifyReport:
        """The report of everything fed so far (logged)."""
        count, out = self.count, self.out
        final_head_seq = self.head_seq if count else None
        cp_results = (
            self.cp_tracker.finish(final_head_seq, out) if self.cp_tracker is not None else ()
        )
        problems = tuple(out.items)
        report = VerifyReport(
            ok=out.count == 0,
            events_checked=count,
            head_seq=final_head_seq,
            head_hash=self.head_hash if count else None,
            first_problem=problems[0] if problems else None,
            problems=problems,
            tenant_id=self.tenant,
            problem_count=out.count,
            checkpoints=cp_results,
        )
        _log_report(report)
        return report


def verify_records(
    records: Iterable[ChainRecord],
    *,
    check_payloads: bool = True,
    expected_tenant: UUID | None = None,
    checkpoints: Sequence[Checkpoint] = (),
) -> VerifyReport:
    """Verify one tenant's chain in a single streaming pass.

    Records should arrive ordered by seq; out-of-order and repeated seqs are reported, not
    assumed away. When ``expected_tenant`` is None the first record's tenant is expected.
    ``check_payloads`` compares each non-null ``payload_text`` with its ``payload_digest``.
    Each checkpoint must be present in the chain with the same hash.
    """
    walk = ChainWalk(
        check_payloads=check_payloads, expected_tenant=expected_tenant, checkpoints=checkpoints
    )
    feed = walk.feed
    for record in records:
        feed(record)
    return walk.report()


def _log_report(report: VerifyReport) -> None:
    if report.ok:
        logger.info(
            "[isokron.chain.verify] tenant %s: %d events verified, head seq %s",
            report.tenant_id,
            report.events_checked,
            report.head_seq,
        )
    else:
        logger.warning(
            "[isokron.chain.verify] tenant %s: %d events checked, %d problems; first: %s",
            report.tenant_id,
            report.events_checked,
            report.problem_count,
            report.first_problem.message if report.first_problem else "-",
        )


def add_findings(report: VerifyReport, findings: Iterable[Finding]) -> VerifyReport:
    """Return a copy of ``report`` with extra findings appended (e.g. header checks)."""
    extra = tuple(findings)
    if not extra:
        return report
    room = max(0, MAX_PROBLEMS - len(report.problems))
    problems = report.problems + extra[:room]
    return replace(
        report,
        ok=False,
        problems=problems,
        first_problem=problems[0] if problems else None,
        problem_count=report.problem_count + len(extra),
    )


def verify_against_checkpoint(report: VerifyReport, checkpoint: Checkpoint) -> Finding | None:
    """Return None when the verified chain contains ``checkpoint``; otherwise a finding.

    A checkpoint is confirmed if it was passed to ``verify_records`` (any seq) or if it names
    the report's head. Anything that cannot be confirmed is reported — failing closed.
    """
    for result in report.checkpoints:
        if result.checkpoint == checkpoint:
            return result.finding
    if report.tenant_id is not None and checkpoint.tenant_id != report.tenant_id:
        return Finding(
            "checkpoint_mismatch",
            checkpoint.seq,
            None,
            f"the checkpoint at seq {checkpoint.seq} is for tenant {checkpoint.tenant_id}, "
            f"but the verified chain is tenant {report.tenant_id}",
        )
    if report.head_seq is not None and checkpoint.seq == report.head_seq:
        if report.head_hash == checkpoint.this_event_hash:
            return None
        return Finding(
            "checkpoint_mismatch",
            checkpoint.seq,
            None,
            f"the chain head at seq {checkpoint.seq} has this_event_hash "
            f"{_short(report.head_hash)} but the checkpoint records "
            f"{_short(checkpoint.this_event_hash)} — the chain was rewritten after the "
            "checkpoint was taken",
        )
    if report.head_seq is None or checkpoint.seq > report.head_seq:
        return Finding(
            "checkpoint_mismatch",
            checkpoint.seq,
            None,
            _missing_checkpoint(checkpoint, report.head_seq),
        )
    return Finding(
        "checkpoint_mismatch",
        checkpoint.seq,
        None,
        f"the checkpoint at seq {checkpoint.seq} was not checked during verification — "
        "pass it to verify_records(checkpoints=...) to confirm it",
    )


@dataclass(frozen=True, slots=True)
class SuspectEvent:
    """An event that a set-based check (e.g. inside PostgreSQL) singled out, with its context.

    ``prev_seq``/``prev_hash`` are the seq and stored ``this_event_hash`` of the event just
    before it in seq order (None for the first event); ``hash_ok`` says whether the stored
    ``this_event_hash`` equals the hash recomputed from the stored columns.
    """

    record: ChainRecord
    prev_seq: int | None
    prev_hash: bytes | None
    hash_ok: bool


def _suspect_link(s: SuspectEvent, out: _Findings) -> None:
    """The ordering and link findings ``verify_records`` gives for one event, from its context."""
    record, seq = s.record, s.record.seq
    if s.prev_seq is None:
        if seq != 1:
            out.add(
                "genesis",
                record,
                f"the chain starts at {_where(record)}, not at seq 1 — "
                "the earliest events are missing or the chain was cut",
            )
        elif record.prev_event_hash != GENESIS_HASH:
            out.add(
                "genesis",
                record,
                f"{_where(record)}: prev_event_hash is {_short(record.prev_event_hash)} "
                "instead of 32 zero bytes — the first event must link to the genesis hash",
            )
    elif seq == s.prev_seq + 1:
        if record.prev_event_hash != s.prev_hash:
            out.add(
                "broken_link",
                record,
                f"{_where(record)}: prev_event_hash does not equal the this_event_hash of "
                f"seq {s.prev_seq} — an event before it was edited, removed or inserted",
            )
    elif seq > s.prev_seq:
        lo, hi = s.prev_seq + 1, seq - 1
        missing = f"seq {lo} is" if lo == hi else f"seqs {lo} to {hi} are"
        out.add(
            "seq_gap",
            record,
            f"{_where(record)} follows seq {s.prev_seq} — {missing} missing "
            "(deleted, or left out of the export)",
        )
    else:
        out.add(
            "fork",
            record,
            f"{_where(record)}: seq {seq} appears more than once — two events claim "
            "the same place in the chain (a fork, or a duplicated event)",
        )


def report_from_suspects(
    suspects: Iterable[SuspectEvent],
    *,
    tenant_id: UUID,
    events_checked: int,
    head: tuple[int, bytes] | None,
    checkpoints: Sequence[Checkpoint] = (),
) -> VerifyReport:
    """Build the report ``verify_records`` would give, from the events a set-based check found.

    ``suspects`` must hold, in seq order, every event whose link, order or hash is wrong, the
    first event, and every event at a checkpoint's seq; any other event is known good.
    ``head`` is the (seq, this_event_hash) of the last event (None for an empty chain).
    Payload digests are not checked here (the caller reports them).
    """
    out = _Findings()
    cp_tracker = _CheckpointTracker(checkpoints) if checkpoints else None
    for s in suspects:
        _suspect_link(s, out)
        if not s.hash_ok:
            _slow_hash_check(s.record, out)
        if cp_tracker is not None:
            cp_tracker.see(s.record, out)
    head_seq = head[0] if head else None
    cp_results = cp_tracker.finish(head_seq, out) if cp_tracker is not None else ()
    problems = tuple(out.items)
    report = VerifyReport(
        ok=out.count == 0,
        events_checked=events_checked,
        head_seq=head_seq,
        head_hash=head[1] if head else None,
        first_problem=problems[0] if problems else None,
        problems=problems,
        tenant_id=tenant_id,
        problem_count=out.count,
        checkpoints=cp_results,
    )
    _log_report(report)
    return report
