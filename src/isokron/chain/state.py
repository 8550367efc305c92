"""The canonical form of a state row, and the record of it an event carries (docs/chain.md §11).

Every write operation that writes a row of a state table records that row in its chain event,
under ``payload["state"][table][key] = {"d": row digest, "c": column digests}`` (or ``null``
when the operation removed the row). Verification re-computes each live row's record and
compares it with the latest event's. This module is the Python half of that byte form; the
SQL half is ``hivex_foundation.row_field`` / ``row_record`` (migration 0011). Pure: no I/O.

    field(s)      = uint32be(len(utf8 s)) || utf8 s
    column(n, v)  = field(n) || 0x00                   if v is NULL
                  = field(n) || 0x01 || field(v)       otherwise (v = the canonical text)
    row bytes     = b"isokron-row-v1" 0x00 || field(table) || column(c1, v1) || column(c2, v2) …
    d             = hex SHA-256(row bytes)
    c             = for each column in order, the first 8 hex digits of SHA-256(column(n, v))

Canonical text by column type: text as is; uuid lower-case with hyphens; integers in decimal;
booleans ``true``/``false``; timestamptz as microseconds since 1970-01-01T00:00:00Z in decimal;
bytea lower-case hex; jsonb PostgreSQL's jsonb text output.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

ROW_FORMAT = "isokron-row-v1"
ROW_PREFIX = ROW_FORMAT.encode("ascii") + b"\x00"
COLUMN_DIGEST_HEX = 8
KEY_SEPARATOR = "/"
_UINT32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class StateTable:
    """A table holding workspace state: its workspace column, key and canonical columns."""

    name: str
    ws_column: str
    key_columns: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (column, PostgreSQL type name) in canonical order

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)


# Column types as PostgreSQL's format_type() names them; "TS" abbreviates timestamptz below.
COLUMN_TYPES = frozenset(
    {"text", "uuid", "integer", "bigint", "boolean", "timestamp with time zone", "bytea", "jsonb"}
)


def _t(name: str, ws: str, key: tuple[str, ...], cols: str) -> StateTable:
    parsed = []
    for part in cols.split():
        column, typ = part.split(":")
        parsed.append((column, "timestamp with time zone" if typ == "TS" else typ))
    return StateTable(name, ws, key, tuple(parsed))


STATE_TABLES: tuple[StateTable, ...] = tuple(
    _t(n, w, k, c)
    for n, w, k, c in (
        ("public.workspaces", "id", ("id",), "id:text name:text created_at:TS"),
        (
            "hivex_foundation.tenant",
            "clerk_org_id",
            ("clerk_org_id",),
            "tenant_id:uuid clerk_org_id:text created_at:TS",
        ),
        (
            "public.actor_registry",
            "workspace_id",
            ("actor_id",),
            "workspace_id:text actor_id:uuid actor_kind:text display_name:text status:text "
            "created_at:TS",
        ),
        (
            "isokron.service_tokens",
            "workspace_id",
            ("token_id",),
            "workspace_id:text token_id:uuid actor_id:uuid token_prefix:text token_hash:bytea "
            "label:text created_at:TS expires_at:TS revoked_at:TS approved_event_id:uuid",
        ),
        (
            "public.kora_role_charter",
            "workspace_id",
            ("charter_id",),
            "workspace_id:text charter_id:uuid version:integer content_md:text "
            "content_jsonb:jsonb content_hash:text is_active:boolean created_at:TS "
            "approved_event_id:uuid",
        ),
        (
            "public.kora_policy_registry",
            "workspace_id",
            ("policy_key",),
            "workspace_id:text policy_key:text policy_value:jsonb description:text "
            "updated_at:TS approved_event_id:uuid",
        ),
        (
            "public.kora_capability_matrix",
            "workspace_id",
            ("cap_name", "actor_kind"),
            "workspace_id:text cap_name:text actor_kind:text granted:boolean cap_group:text "
            "description:text updated_at:TS approved_event_id:uuid",
        ),
        (
            "kronicle.workspace_constitution_revisions",
            "workspace_id",
            ("revision_id",),
            "workspace_id:text revision_id:uuid revision_number:integer rules:jsonb "
            "rules_hash:bytea created_at:TS approved_event_id:uuid",
        ),
        (
            "kronicle.agent_scratchpad_entries",
            "workspace_id",
            ("entry_id",),
            "workspace_id:text entry_id:uuid actor_id:uuid session_id:text kind:text "
            "visibility_scope:text summary:text content:text content_uri:text "
            "content_hash:text status:text created_at:TS approved_event_id:uuid",
        ),
        (
            "kronicle.iso_nodes",
            "workspace_id",
            ("node_id",),
            "workspace_id:text node_id:uuid node_type:text title:text content:text "
            "properties:jsonb status:text superseded_by:uuid created_by:uuid created_at:TS "
            "approved_event_id:uuid superseded_event_id:uuid",
        ),
        (
            "kronicle.iso_links",
            "workspace_id",
            ("link_id",),
            "workspace_id:text link_id:uuid from_node_id:uuid to_node_id:uuid link_type:text "
            "properties:jsonb created_by:uuid created_at:TS approved_event_id:uuid",
        ),
        (
            "kronicle.convention_proposals",
            "workspace_id",
            ("proposal_id",),
            "workspace_id:text proposal_id:uuid actor_id:uuid title:text body:text "
            "rationale:text status:text decided_by:uuid decided_at:TS decision_note:text "
            "created_at:TS approved_event_id:uuid decision_event_id:uuid",
        ),
        (
            "kronicle.policy_change_proposals",
            "workspace_id",
            ("proposal_id",),
            "workspace_id:text proposal_id:uuid actor_id:uuid policy_key:text "
            "proposed_value:jsonb rationale:text status:text decided_by:uuid decided_at:TS "
            "decision_note:text created_at:TS approved_event_id:uuid decision_event_id:uuid",
        ),
        (
            "kronicle.escalations",
            "workspace_id",
            ("escalation_id",),
            "workspace_id:text escalation_id:uuid actor_id:uuid tool:text rule_id:text "
            "reason:text request:jsonb status:text decided_by:uuid decided_at:TS "
            "decision_note:text result:jsonb created_at:TS approved_event_id:uuid "
            "decision_event_id:uuid",
        ),
    )
)
STATE_TABLES_BY_NAME: dict[str, StateTable] = {t.name: t for t in STATE_TABLES}


@dataclass(frozen=True, slots=True)
class RowRecord:
    """What an event records of one row: its digest and its per-column digests."""

    d: str
    c: str

    def to_json(self) -> dict[str, str]:
        return {"d": self.d, "c": self.c}

    @classmethod
    def from_json(cls, value: Any) -> RowRecord | None:
        """Parse ``{"d": ..., "c": ...}``; ``None`` for JSON null (the row was removed)."""
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("d"), str):
            raise ValueError(f"not a row record: {value!r:.80}")
        return cls(d=value["d"], c=str(value.get("c", "")))


def field(text: str) -> bytes:
    """uint32be(length) || UTF-8 bytes."""
    data = text.encode("utf-8")
    return _UINT32.pack(len(data)) + data


def column_bytes(name: str, value: str | None) -> bytes:
    """One column of the row byte form."""
    if value is None:
        return field(name) + b"\x00"
    return field(name) + b"\x01" + field(value)


@functools.lru_cache(maxsize=256)
def _layout(table: str, names: tuple[str, ...]) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
    """The constant parts of a table's row bytes: the row prefix with the table's field, and
    per column its bytes when NULL and the start of its bytes otherwise (a verify computes the
    record of every live row; the names are the same for every row of a table)."""
    return ROW_PREFIX + field(table), tuple((field(n) + b"\x00", field(n) + b"\x01") for n in names)


def _row_parts(
    table: str, names: Sequence[str], values: Sequence[str | None]
) -> tuple[bytes, list[bytes]]:
    """The row's bytes before its columns, and each column's :func:`column_bytes`, assembled
    from the table's cached constant parts."""
    head, parts = _layout(table, tuple(names))
    if len(parts) != len(values):
        raise ValueError(f"{table}: {len(parts)} columns but {len(values)} values")
    pack = _UINT32.pack
    columns = []
    for (null, present), value in zip(parts, values, strict=True):
        if value is None:
            columns.append(null)
        else:
            # "surrogatepass": a lone surrogate (only in a forged bundle line; PostgreSQL's text
            # never holds one) gets bytes no stored row has, so the row differs, not raises.
            data = value.encode("utf-8", "surrogatepass")
            columns.append(present + pack(len(data)) + data)
    return head, columns


def row_bytes(table: str, names: Sequence[str], values: Sequence[str | None]) -> bytes:
    """The canonical bytes of a row whose columns ``names`` have canonical texts ``values``."""
    head, columns = _row_parts(table, names, values)
    return head + b"".join(columns)


def row_digest(table: str, names: Sequence[str], values: Sequence[str | None]) -> str:
    """The ``d`` of a row's record alone: what proves the row. A verify computes it for every
    live row and the column digests (13 more SHA-256 for a 13-column row) only for a row whose
    ``d`` differs, to name its columns (measured: 2.8 times less CPU per row)."""
    return hashlib.sha256(row_bytes(table, names, values)).hexdigest()


def row_record(table: str, names: Sequence[str], values: Sequence[str | None]) -> RowRecord:
    """The record of a row (what its event carries): the digest of its :func:`row_bytes` and
    the short digests of its columns."""
    head, columns = _row_parts(table, names, values)
    sha256 = hashlib.sha256
    digest = sha256(head + b"".join(columns)).hexdigest()
    short = "".join([sha256(c).hexdigest()[:COLUMN_DIGEST_HEX] for c in columns])
    return RowRecord(d=digest, c=short)


def differing_columns(table: StateTable, recorded: RowRecord, live: RowRecord) -> list[str]:
    """The columns whose digests differ between two records of a row of ``table``."""
    names = table.column_names
    step = COLUMN_DIGEST_HEX
    if len(recorded.c) != step * len(names):
        return list(names)  # recorded under another column list: cannot say which
    return [
        name
        for i, name in enumerate(names)
        if recorded.c[i * step : (i + 1) * step] != live.c[i * step : (i + 1) * step]
    ]


def key_text(values: Sequence[str]) -> str:
    """A row's key as events name it: its key columns' canonical texts joined by ``/``."""
    return KEY_SEPARATOR.join(values)


ERASURE_EVENT = "substrate.payload.erased"
ATTESTATION_EVENT = "substrate.state.attested"
TOMBSTONE_KEYS = frozenset({"erased", "reason", "erased_at"})


@dataclass(slots=True)
class _Latest:
    seq: int
    record: RowRecord | None


@dataclass(frozen=True, slots=True)
class _Erasure:
    seq: int
    erased_event_id: str
    reason: Any


def parse_payload(text: str | bytes) -> Any:
    """An event's payload JSON as the ledger takes it, or None when the parser refuses it: only
    a forged payload is malformed, too large or too deep (the chain check reports it)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


#: What a verification's row and state checks are doing, for a progress display: the phase and
#: its running count. "scratchpad": entries whose content was hashed again; "records": events
#: whose row records were read; "rows": state rows compared with their records.
RowProgress = Callable[[str, int], None]
#: Rows (or records) between two progress reports; each phase also reports where it starts.
ROW_PROGRESS_EVERY = 20_000


class StateLedger:
    """What the chain says each state row is, checked against the live rows (pure).

    Feed it every event that carries ``state`` (or is erased, or records an erasure) in seq
    order with :meth:`add_event`, then the live rows of each table with :meth:`check_table`,
    then call :meth:`finish`. Each check returns :class:`~isokron.chain.verify.Finding` s naming
    table, key and what differs. ``progress``, when given, gets ``("rows", rows checked so
    far)`` every :data:`ROW_PROGRESS_EVERY` rows and after each table.
    """

    def __init__(self, progress: RowProgress | None = None) -> None:
        self._progress = progress
        self._latest: dict[tuple[str, str], _Latest] = {}
        self._erased: dict[int, tuple[str, Any]] = {}  # seq -> (event_id, tombstone)
        self._erasures: dict[int, _Erasure] = {}  # erased seq -> the erasure event
        self._seen: set[tuple[str, str]] = set()
        self.rows_checked = 0
        self.records = 0

    def add_event(
        self,
        seq: int,
        event_id: str,
        event_type: str,
        payload: Any,
        *,
        erased: bool = False,
    ) -> None:
        """One event: its payload (or tombstone when ``erased``). ``event_id`` is kept only for
        an erased event (its erasure must name it); other callers may pass ``""``."""
        if erased:
            self._erased[seq] = (str(event_id), payload)
            return
        if not isinstance(payload, dict):
            return
        self._merge(payload.get("state"), seq)
        if event_type == ERASURE_EVENT:
            target = payload.get("erased_seq")
            if isinstance(target, int):
                self._erasures[target] = _Erasure(
                    seq, str(payload.get("erased_event_id")), payload.get("reason")
                )
                # The erased event's records keep their place in the order of events.
                self._merge(payload.get("carried_state"), target)

    def _merge(self, state: Any, seq: int) -> None:
        if not isinstance(state, dict):
            return
        for table, rows in state.items():
            if not isinstance(rows, dict):
                continue
            for key, value in rows.items():
                try:
                    record = RowRecord.from_json(value)
                except ValueError:
                    record = RowRecord(d="malformed", c="")
                self.records += 1
                latest = self._latest.get((table, key))
                if latest is None or seq >= latest.seq:
                    self._latest[(table, key)] = _Latest(seq, record)

    def check_table(self, table: StateTable, rows: Any, finding: Any) -> list[Any]:
        """Compare live rows ``(key_text, canonical texts)`` of ``table`` with their records."""
        out = []
        names = table.column_names
        progress = self._progress
        for key, values in rows:
            self.rows_checked += 1
            if progress is not None and self.rows_checked % ROW_PROGRESS_EVERY == 0:
                progress("rows", self.rows_checked)
            self._seen.add((table.name, key))
            latest = self._latest.get((table.name, key))
            if latest is None or latest.record is None:
                why = (
                    "no event records it"
                    if latest is None
                    else (f"event seq {latest.seq} removed it")
                )
                out.append(
                    finding(
                        "state_unrecorded",
                        None if latest is None else latest.seq,
                        f"{table.name} row {key} exists but {why} — it was inserted outside "
                        "the write operations",
                    )
                )
                continue
            if len(values) != len(names):  # only from a bundle's state line
                out.append(
                    finding(
                        "state_mismatch",
                        latest.seq,
                        f"{table.name} row {key} has {len(values)} values where the table has "
                        f"{len(names)} columns — it was changed outside the write operations",
                    )
                )
                continue
            if row_digest(table.name, names, values) != latest.record.d:
                live = row_record(table.name, names, values)
                cols = differing_columns(table, latest.record, live) or ["(row digest)"]
                out.append(
                    finding(
                        "state_mismatch",
                        latest.seq,
                        f"{table.name} row {key} differs from what event seq {latest.seq} "
                        f"recorded, in {', '.join(cols)} — it was changed outside the write "
                        "operations",
                    )
                )
        if progress is not None:
            progress("rows", self.rows_checked)
        return out

    def finish(self, tables: Sequence[StateTable], finding: Any) -> list[Any]:
        """Rows the chain records that no longer exist, and erasures not chained as such."""
        out = []
        checked = {t.name for t in tables}
        seen = self._seen
        missing = [
            (name, latest)
            for name, latest in self._latest.items()
            if name[0] in checked and latest.record is not None and name not in seen
        ]
        for (table, key), latest in sorted(missing, key=lambda m: m[0]):  # only the missing
            out.append(
                finding(
                    "state_missing",
                    latest.seq,
                    f"{table} row {key}, recorded by event seq {latest.seq}, does not exist "
                    "— it was deleted outside the write operations",
                )
            )
        for seq, (event_id, tombstone) in sorted(self._erased.items()):
            out.extend(self._erasure_findings(seq, event_id, tombstone, finding))
        return out

    def _erasure_findings(self, seq: int, event_id: str, tombstone: Any, finding: Any) -> list[Any]:
        erasure = self._erasures.get(seq)
        if erasure is None or erasure.seq <= seq or erasure.erased_event_id != event_id:
            return [
                finding(
                    "erasure_unchained",
                    seq,
                    f"event seq {seq} is marked erased but no {ERASURE_EVENT} event after it "
                    "names it — its payload was replaced outside the chained erasure",
                )
            ]
        if tombstone is None:
            return []  # an export that carries no payloads: nothing to check here
        if (
            not isinstance(tombstone, dict)
            or set(tombstone) != TOMBSTONE_KEYS
            or tombstone.get("erased") is not True
            or not isinstance(tombstone.get("erased_at"), str)
            or tombstone.get("reason") != erasure.reason
        ):
            return [
                finding(
                    "tombstone_malformed",
                    seq,
                    f"event seq {seq} was erased (by event seq {erasure.seq}) but its tombstone "
                    "is not the fixed {erased, reason, erased_at} form with the chained reason",
                )
            ]
        return []
