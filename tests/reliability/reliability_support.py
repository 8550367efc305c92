"""Helpers of the reliability suite: figures, tenants, results, chain accounting.

Everything here (and in ``reliability_processes``) drives the real system: gateway processes
over HTTP or stdio, the official MCP client, and the real PostgreSQL of ``tests/conftest.py``
(or a dedicated embedded one). Nothing stands in for any of them.

The suite prints what it measured (writes attempted / accepted / lost / doubled, faults
injected / survived, tamper cases tried / caught, cross-tenant rows seen, fuzz cases run /
failures) through :data:`FIGURES`, which ``conftest.py`` turns into a table at the end of the
pytest run and a JSON file under the pytest temporary directory.

``ISOKRON_SOAK`` makes the suite longer: ``1``/``true`` multiplies its counts by
``DEFAULT_SOAK_FACTOR``, an integer N >= 2 by N.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from mcp_types import CallToolResult

from isokron.gateway.results import ERROR_CODES
from isokron.governance.seeds import default_seed
from isokron.substrate import writes

SOAK_ENV = "ISOKRON_SOAK"
DEFAULT_SOAK_FACTOR = 10
RATE_LIMIT_FOR_TESTS = 1_000_000  # writes per minute: the suite measures correctness, not limits

DENIED = "gateway.write.denied"


# ------------------------------------------------------------------------------ soak scaling


def soak_factor() -> int:
    """How much longer the suite runs (1 by default; see the module docstring)."""
    raw = os.environ.get(SOAK_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return 1
    if raw.isdigit() and int(raw) >= 2:
        return int(raw)
    return DEFAULT_SOAK_FACTOR


def scaled(n: int) -> int:
    """``n`` times the soak factor."""
    return n * soak_factor()


# ---------------------------------------------------------------------------------- figures


@dataclass
class Figures:
    """Counters grouped by section, printed at the end of the run (see conftest.py)."""

    values: dict[str, dict[str, int | float | str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, section: str, name: str, amount: int = 1) -> None:
        with self._lock:
            bucket = self.values.setdefault(section, {})
            bucket[name] = int(bucket.get(name, 0)) + amount

    def set(self, section: str, name: str, value: int | float | str) -> None:
        with self._lock:
            self.values.setdefault(section, {})[name] = value

    def get(self, section: str, name: str, default: int = 0) -> int | float | str:
        return self.values.get(section, {}).get(name, default)

    def to_json(self) -> dict[str, Any]:
        return {
            "soak_factor": soak_factor(),
            "headline": self.headline(),
            "figures": self.values,
        }

    def headline(self) -> dict[str, str]:
        """The figures issue 6 asks for, each as ``a / b``."""

        def n(section: str, name: str) -> int:
            value = self.get(section, name)
            return int(value) if isinstance(value, int | float) else 0

        fuzz_runs = n("fuzz", "gateway fuzz cases run") + n("fuzz", "CLI fuzz cases run")
        fuzz_failures = n("fuzz", "gateway fuzz failures") + n("fuzz", "CLI fuzz failures")
        writes = ("writes attempted", "writes accepted", "writes lost", "writes doubled")
        return {
            "writes attempted / accepted / lost / doubled": " / ".join(
                str(n("totals", k)) for k in writes
            ),
            "faults injected / survived": (
                f"{n('faults', 'faults injected')} / {n('faults', 'faults survived')}"
            ),
            "tamper cases tried / caught": (
                f"{n('tamper', 'tamper cases tried')} / {n('tamper', 'tamper cases caught')}"
            ),
            "cross-tenant rows seen": str(n("isolation", "cross-tenant rows seen")),
            "fuzz cases run / failures": f"{fuzz_runs} / {fuzz_failures}",
            "secrets found at rest or in IsoKron logs": str(
                n("secrets", "secret hits in the database")
                + n("secrets", "secret hits in IsoKron logs (gateways + provider)")
            ),
        }

    def table_lines(self) -> list[str]:
        headline = self.headline()
        width = max(
            [len(name) for section in self.values.values() for name in section]
            + [len(name) for name in headline]
        )
        lines = [f"soak factor: {soak_factor()}", "[headline]"]
        lines += [f"  {name:<{width}}  {value}" for name, value in headline.items()]
        for section in sorted(self.values):
            lines.append(f"[{section}]")
            for name, value in self.values[section].items():
                lines.append(f"  {name:<{width}}  {value}")
        return lines


#: The one collector of this pytest process.
FIGURES = Figures()


# ----------------------------------------------------------------------------- the tenants


@dataclass(frozen=True)
class Tenant:
    """A seeded workspace with a Kora and an operator token (rate limit lifted)."""

    workspace_id: str
    tenant_id: uuid.UUID
    operator_id: uuid.UUID
    actors: dict[str, uuid.UUID]
    kora_token: str
    operator_token: str


#: Load and fault tests write far faster than an agent may: their tenants lift the per-second,
#: per-type and daily quotas (tests of those quotas set them on purpose).
LIFTED_QUOTAS = [
    {"policy_key": key, "policy_value": 1_000_000}
    for key in (
        "policy.kora_rate_limit_burst",
        "policy.kora_max_nodes_per_minute",
        "policy.kora_max_links_per_minute",
        "policy.kora_max_proposals_per_24h",
        "policy.kora_max_open_escalations",
    )
]


async def make_tenant(
    admin_pool: asyncpg.Pool, prefix: str, *, rate_limit: int = RATE_LIMIT_FOR_TESTS
) -> Tenant:
    """Create and seed a workspace, issue its tokens and lift its rate limit (chained, as an
    operator would with ``isokron policy set``)."""
    ws_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    async with admin_pool.acquire() as conn:
        created = await writes.create_workspace(
            conn, ws_id, f"Reliability {ws_id}", seed=default_seed()
        )
        operator = created.operator_actor_id
        kora = await writes.issue_token(conn, ws_id, operator, created.actors["kora"])
        op = await writes.issue_token(conn, ws_id, operator, operator)
        await writes.govern(
            conn,
            "set_policies",
            ws_id,
            operator,
            {
                "policies": [
                    {"policy_key": "policy.kora_rate_limit_per_minute", "policy_value": rate_limit},
                    *LIFTED_QUOTAS,
                ]
            },
        )
    return Tenant(ws_id, created.tenant_id, operator, dict(created.actors), kora.token, op.token)


# ------------------------------------------------------------------------------- results


def refusal(result: CallToolResult) -> dict[str, Any] | None:
    """The structured error of a refused call (checked for shape), or None for a success.

    Raises AssertionError when a refusal is untyped: no ``structuredContent.error.code``, a code
    outside the documented set, or text that is not ``[code] sentence``.
    """
    if not result.is_error:
        return None
    structured = result.structured_content
    assert isinstance(structured, dict) and isinstance(structured.get("error"), dict), result
    error = structured["error"]
    assert error.get("code") in ERROR_CODES, f"untyped refusal: {error!r}"
    text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
    assert text == f"[{error['code']}] {error['message']}", (text, error)
    assert error["message"].strip(), error
    return error


def success(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a successful call (asserting it is one)."""
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


# ----------------------------------------------------------------------- chain accounting

#: What each accepted write appends and where its row lives (table, column naming the event).
EVENT_ROWS: dict[str, tuple[str, str] | None] = {
    "kora.node.created": ("kronicle.iso_nodes", "approved_event_id"),
    "kora.node.superseded": ("kronicle.iso_nodes", "approved_event_id"),
    "kora.link.created": ("kronicle.iso_links", "approved_event_id"),
    "kora.scratchpad.written": ("kronicle.agent_scratchpad_entries", "approved_event_id"),
    "kora.convention.proposed": ("kronicle.convention_proposals", "approved_event_id"),
    "kora.policy_change.proposed": ("kronicle.policy_change_proposals", "approved_event_id"),
    "kora.escalation.raised": ("kronicle.escalations", "approved_event_id"),
}
#: Workspace tables whose rows writes create (idempotency and rate-limit rows excluded).
ROW_TABLES: tuple[str, ...] = (
    "kronicle.iso_nodes",
    "kronicle.iso_links",
    "kronicle.agent_scratchpad_entries",
    "kronicle.convention_proposals",
    "kronicle.policy_change_proposals",
    "kronicle.escalations",
    "public.kora_policy_registry",
    "public.kora_capability_matrix",
    "public.kora_role_charter",
    "kronicle.workspace_constitution_revisions",
    "isokron.service_tokens",
)
COUNT_ROWS_SQL = "SELECT " + ", ".join(
    f'(SELECT count(*) FROM {t} WHERE workspace_id = $1) AS "{t}"' for t in ROW_TABLES
)
EVENTS_SQL = """
SELECT el.seq, el.event_id, el.event_type, el.actor_id, el.payload::text AS payload_text
FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
WHERE t.clerk_org_id = $1 AND el.seq > $2
ORDER BY el.seq
"""
HEAD_SQL = """
SELECT coalesce(max(el.seq), 0), count(*)
FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
WHERE t.clerk_org_id = $1
"""


async def chain_head(pool: asyncpg.Pool, workspace_id: str) -> tuple[int, int]:
    """(highest seq, number of events) of the workspace's chain: equal when gapless."""
    row = await pool.fetchrow(HEAD_SQL, workspace_id)
    return int(row[0]), int(row[1])


async def events_after(pool: asyncpg.Pool, workspace_id: str, seq: int) -> list[asyncpg.Record]:
    return list(await pool.fetch(EVENTS_SQL, workspace_id, seq))


async def row_counts(pool: asyncpg.Pool, workspace_id: str) -> dict[str, int]:
    row = await pool.fetchrow(COUNT_ROWS_SQL, workspace_id)
    return {t: int(row[t]) for t in ROW_TABLES}


async def rows_per_event(
    pool: asyncpg.Pool, workspace_id: str, event_ids: Sequence[uuid.UUID | str]
) -> dict[str, int]:
    """For each event id, how many rows of any table name it as ``approved_event_id``."""
    ids = [uuid.UUID(str(e)) for e in event_ids]
    counts: Counter[str] = Counter()
    for table in sorted({t for t, _ in filter(None, EVENT_ROWS.values())}):
        for r in await pool.fetch(
            f"SELECT approved_event_id::text AS e, count(*) AS n FROM {table} "
            "WHERE workspace_id = $1 AND approved_event_id = ANY($2::uuid[]) GROUP BY 1",
            workspace_id,
            ids,
        ):
            counts[r["e"]] += int(r["n"])
    return {str(e): counts.get(str(e), 0) for e in ids}


MARKER_RE = re.compile(r"mk-[0-9a-f]{20}")


def new_marker() -> str:
    """A unique string a write carries in its text, to count its rows and events later."""
    return "mk-" + uuid.uuid4().hex[:20]


async def marker_counts(pool: asyncpg.Pool, workspace_id: str) -> tuple[Counter[str], Counter[str]]:
    """How many chain events and how many rows carry each marker."""
    events: Counter[str] = Counter()
    for r in await events_after(pool, workspace_id, 0):
        events.update(set(MARKER_RE.findall(r["payload_text"])))
    rows: Counter[str] = Counter()
    for table in ROW_TABLES[:6]:
        for r in await pool.fetch(
            f"SELECT t::text AS line FROM {table} t WHERE workspace_id = $1", workspace_id
        ):
            rows.update(set(MARKER_RE.findall(r["line"])))
    return events, rows


@dataclass(frozen=True)
class LogicalWrite:
    """One write a client means to make exactly once: tool, arguments, idempotency key."""

    workspace_id: str
    tool: str
    arguments: dict[str, Any]
    marker: str
    makes_row: bool

    @property
    def key(self) -> str:
        return str(self.arguments["idempotency_key"])


def logical_write(workspace_id: str, n: int) -> LogicalWrite:
    """The ``n``-th write of a mixed workload (node, scratchpad entry, event, convention)."""
    marker = new_marker()
    key = f"rel-{uuid.uuid4().hex}"
    kind = n % 4
    if kind == 0:
        tool, makes_row = "iso_node_create", True
        args: dict[str, Any] = {"node_type": "fact", "title": f"fact {marker}", "content": f"#{n}"}
    elif kind == 1:
        tool, makes_row = "kora__write_agent_scratchpad", True
        args = {"kind": "observation", "summary": f"observation {marker}", "content": f"#{n}"}
    elif kind == 2:
        tool, makes_row = "kora__append_event", False
        args = {"event_type": "kora.load.tick", "payload": {"marker": marker, "n": n}}
    else:
        tool, makes_row = "kora__propose_convention", True
        args = {"title": f"convention {marker}", "body": f"body #{n}"}
    args["idempotency_key"] = key
    return LogicalWrite(workspace_id, tool, args, marker, makes_row)


@dataclass
class Ledger:
    """What clients were told: for each logical write, every acknowledged result."""

    writes: dict[str, LogicalWrite] = field(default_factory=dict)
    acks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    attempts: int = 0
    refusals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def plan(self, write: LogicalWrite) -> None:
        self.writes.setdefault(write.key, write)

    def acked(self, write: LogicalWrite, result: dict[str, Any]) -> None:
        self.acks.setdefault(write.key, []).append(result)

    @property
    def replays(self) -> int:
        return sum(1 for results in self.acks.values() for r in results if r.get("replayed"))


@dataclass(frozen=True)
class Accounting:
    """How the database agrees with a ledger."""

    attempted: int
    accepted: int
    lost: int
    doubled: int
    problems: tuple[str, ...]


async def account(pool: asyncpg.Pool, ledger: Ledger) -> Accounting:
    """Check every logical write of ``ledger`` against the chains and rows of its workspaces.

    A write is *lost* when it has no acknowledged result, or its event or row is missing;
    *doubled* when its marker is on more than one event or row, when two acknowledgements name
    different events, or when more than one row names its event. Chains must be gapless.
    """
    problems: list[str] = []
    events: Counter[str] = Counter()
    rows: Counter[str] = Counter()
    known_events: set[str] = set()
    row_events: dict[str, int] = {}
    workspaces = sorted({w.workspace_id for w in ledger.writes.values()})
    for ws in workspaces:
        e, r = await marker_counts(pool, ws)
        events.update(e)
        rows.update(r)
        known_events.update(str(x["event_id"]) for x in await events_after(pool, ws, 0))
        seq, count = await chain_head(pool, ws)
        if seq != count:
            problems.append(f"{ws}: chain has {count} events up to seq {seq} (a gap)")
        row_events.update(
            await rows_per_event(
                pool,
                ws,
                [
                    str(ledger.acks[k][0]["event_id"])
                    for k, w in ledger.writes.items()
                    if w.workspace_id == ws and w.makes_row and ledger.acks.get(k)
                ],
            )
        )
    lost = doubled = accepted = 0
    for key, write in ledger.writes.items():
        results = ledger.acks.get(key, [])
        if not results:
            lost += 1
            problems.append(f"{write.marker}: never acknowledged")
            continue
        accepted += 1
        event_ids = sorted({str(r.get("event_id")) for r in results})
        if len(event_ids) != 1:
            doubled += 1
            problems.append(f"{write.marker}: acknowledged with events {event_ids}")
        if event_ids[0] not in known_events:
            lost += 1
            problems.append(
                f"{write.marker}: acknowledged event {event_ids[0]} is not in the chain"
            )
        expected = 1 if write.makes_row else 0
        n_events, n_rows = events[write.marker], rows[write.marker]
        n_approving = row_events.get(event_ids[0], 0) if write.makes_row else 0
        counts = f"{n_events} events, {n_rows} rows, {n_approving} rows approved by its event"
        if n_events < 1 or n_rows < expected or n_approving < expected:
            lost += 1
            problems.append(f"{write.marker}: {counts}")
        elif n_events > 1 or n_rows > expected or n_approving > expected:
            doubled += 1
            problems.append(f"{write.marker}: {counts}")
    return Accounting(ledger.attempts, accepted, lost, doubled, tuple(problems))


def describe(exc: BaseException) -> str:
    """One line for an exception, unwrapping exception groups to their first member."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
