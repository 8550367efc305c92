"""Per-workspace governance state, read from the substrate and kept in memory for a short TTL.

The pipeline decides every call from a :class:`Governance` snapshot: the workspace's policies
(kill switch, rate limit, size caps), the caller's row of the capability matrix and the active
constitution revision, compiled. Snapshots are cached per (workspace, actor kind) for
``ttl`` seconds (``GatewaySettings.governance_ttl_seconds``): that is how long a policy,
capability or constitution change can take to reach a running gateway. Compiled constitutions
are cached by (workspace, revision id), so a snapshot refresh does not recompile an unchanged
revision. Concurrent misses for one key share a single load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg

from isokron.errors import ConfigError
from isokron.governance import policies as p
from isokron.governance.operations import OPERATIONS, WRITE_QUOTAS
from isokron.governance.policies import POLICIES, flag
from isokron.governance.rules import Constitution
from isokron.substrate import reads
from isokron.substrate.models import CapabilityRow, PolicyEntry

log = logging.getLogger("isokron.gateway.governance")

#: The policies that set a quota's limit (see ``isokron.governance.operations.Quota``).
QUOTA_POLICIES = tuple(
    sorted(
        {q.policy for op in OPERATIONS.values() for q in op.quotas}
        | {q.policy for q in WRITE_QUOTAS}
    )
)
#: The actor kind the kill switch stops.
KILLABLE_KIND = "kora"
#: Most compiled constitution revisions kept in memory.
MAX_COMPILED_REVISIONS = 256


@dataclass(frozen=True, slots=True)
class Governance:
    """What one actor kind may do in one workspace right now.

    ``constitution`` is None when the workspace has no revision or its rules do not compile;
    ``constitution_problem`` then says why, and writes are refused unless the workspace's
    ``policy.kora_constitution_failure_mode`` is ``"allow"``.
    """

    workspace_id: str
    actor_kind: str
    capabilities: CapabilityRow
    kill_switch: bool
    rate_limit_per_minute: int
    max_payload_bytes: int
    max_scratchpad_content_bytes: int
    max_summary_bytes: int
    default_visibility: str
    search_default_limit: int
    output_cap: int
    constitution: Constitution | None
    constitution_revision: int | None = None
    constitution_problem: str | None = None
    constitution_fail_open: bool = False
    #: Limit of each quota policy (writes per minute, burst, nodes, links, proposals ...).
    limits: Mapping[str, int] = field(default_factory=dict)
    handoff_summary_required: bool = True
    token_max_age_days: int = 0
    denials_redacted: bool = True

    @property
    def stopped(self) -> bool:
        """True when the kill switch applies to this actor kind."""
        return self.kill_switch and self.actor_kind == KILLABLE_KIND


def whole_number(policies: Mapping[str, Any], key: str, workspace_id: str) -> int:
    """A non-negative integer policy; a missing or malformed one falls back to its seed value."""
    value = p.whole_number(policies, key)
    if value is not None:
        return value
    fallback = int(POLICIES[key].default)
    log.warning(
        "[isokron.gateway.policy_fallback] workspace %s: %s is %s; using the seeded value %d",
        workspace_id,
        key,
        "missing" if key not in policies else f"not a whole number ({policies.get(key)!r})",
        fallback,
    )
    return fallback


def build_governance(
    workspace_id: str,
    actor_kind: str,
    policies: tuple[PolicyEntry, ...],
    capabilities: CapabilityRow,
    constitution: Constitution | None,
    *,
    constitution_revision: int | None = None,
    constitution_problem: str | None = None,
) -> Governance:
    """Assemble a snapshot from what was read (pure; no I/O)."""
    values = {entry.policy_key: entry.value for entry in policies}
    visibility = values.get(p.DEFAULT_VISIBILITY)
    if visibility not in ("own_only", "cross_agent_dereferenceable"):
        visibility = "own_only"
    return Governance(
        workspace_id=workspace_id,
        actor_kind=actor_kind,
        capabilities=capabilities,
        kill_switch=flag(values.get(p.KILL_SWITCH)),
        rate_limit_per_minute=whole_number(values, p.RATE_LIMIT, workspace_id),
        max_payload_bytes=whole_number(values, p.MAX_PAYLOAD, workspace_id),
        max_scratchpad_content_bytes=whole_number(values, p.MAX_SCRATCHPAD_CONTENT, workspace_id),
        max_summary_bytes=whole_number(values, p.MAX_SUMMARY, workspace_id),
        default_visibility=str(visibility),
        search_default_limit=whole_number(values, p.SEARCH_DEFAULT_LIMIT, workspace_id),
        output_cap=whole_number(values, p.OUTPUT_CAP, workspace_id),
        constitution=constitution,
        constitution_revision=constitution_revision,
        constitution_problem=constitution_problem,
        constitution_fail_open=values.get(p.CONSTITUTION_FAILURE_MODE) == "allow",
        limits={key: whole_number(values, key, workspace_id) for key in QUOTA_POLICIES},
        handoff_summary_required=flag(values.get(p.HANDOFF_SUMMARY_REQUIRED)),
        token_max_age_days=whole_number(values, p.TOKEN_MAX_AGE, workspace_id),
        denials_redacted=flag(values.get(p.DENIALS_REDACTED)),
    )


class GovernanceCache:
    """Governance snapshots per (workspace, actor kind), loaded through the reader role."""

    def __init__(
        self,
        reader_pool: asyncpg.Pool,
        *,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = reader_pool
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[Governance, float]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[Governance]] = {}
        self._compiled: dict[tuple[str, UUID], Constitution] = {}

    async def get(self, workspace_id: str, actor_kind: str) -> Governance:
        """The snapshot for ``actor_kind`` in ``workspace_id``, at most ``ttl`` seconds old."""
        key = (workspace_id, actor_kind)
        entry = self._entries.get(key)
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(workspace_id, actor_kind))
            self._loading[key] = pending
            pending.add_done_callback(partial(self._forget_load, key))
        # Shielded: a caller that gives up does not cancel the load the others wait for.
        return await asyncio.shield(pending)

    def _forget_load(self, key: tuple[str, str], _done: asyncio.Future[Governance]) -> None:
        self._loading.pop(key, None)

    async def _load(self, workspace_id: str, actor_kind: str) -> Governance:
        started = self._clock()
        policies, capabilities, active = await asyncio.gather(
            reads.read_policy_registry(self._pool, workspace_id),
            reads.read_capability_row(self._pool, workspace_id, actor_kind),
            reads.read_active_constitution(self._pool, workspace_id),
        )
        constitution: Constitution | None = None
        problem: str | None = None
        revision: int | None = None
        if active is None:
            problem = "the workspace has no constitution revision"
        else:
            revision = active.revision_number
            constitution, problem = self._compile(workspace_id, active.revision_id, active.rules)
        governance = build_governance(
            workspace_id,
            actor_kind,
            policies,
            capabilities,
            constitution,
            constitution_revision=revision,
            constitution_problem=problem,
        )
        if self._ttl > 0:
            self._entries[(workspace_id, actor_kind)] = (governance, started + self._ttl)
        return governance

    def _compile(
        self, workspace_id: str, revision_id: UUID, rules: Any
    ) -> tuple[Constitution | None, str | None]:
        key = (workspace_id, revision_id)
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled, None
        try:
            compiled = Constitution.from_rules(rules)
        except ConfigError as exc:
            log.error(
                "[isokron.gateway.constitution_invalid] workspace %s revision %s: %s",
                workspace_id,
                revision_id,
                exc,
            )
            return None, f"the active constitution revision does not compile ({exc})"
        if len(self._compiled) >= MAX_COMPILED_REVISIONS:
            self._compiled.clear()
        self._compiled[key] = compiled
        return compiled, None
