"""Typed values read from the substrate (frozen, so caches can share them between threads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class RoleCharter:
    """The active, SHA-256-verified role charter of a workspace."""

    workspace_id: str
    charter_id: UUID
    version: int
    content_md: str
    identity: str
    authority_can_do: tuple[str, ...]
    authority_cannot_do: tuple[str, ...]
    content_hash: str


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    """One row of ``kora_policy_registry``; ``value`` is the decoded JSON value."""

    policy_key: str
    value: Any
    description: str = ""


@dataclass(frozen=True, slots=True)
class CapabilityRow:
    """One actor kind's column of the capability matrix. Unknown capabilities are denied."""

    actor_kind: str
    capabilities: dict[str, bool] = field(default_factory=dict)

    @property
    def granted(self) -> tuple[str, ...]:
        return tuple(sorted(k for k, v in self.capabilities.items() if v))

    @property
    def denied(self) -> tuple[str, ...]:
        return tuple(sorted(k for k, v in self.capabilities.items() if not v))

    def has(self, cap_name: str) -> bool:
        """True only for a capability that exists and is granted (fail closed)."""
        return self.capabilities.get(cap_name, False) is True


@dataclass(frozen=True, slots=True)
class ScratchpadEntry:
    """A scratchpad entry; ``drifted`` when its content no longer matches its BLAKE3 hash."""

    entry_id: UUID
    actor_id: UUID
    actor_kind: str
    actor_label: str
    kind: str
    visibility_scope: str
    summary: str
    content: str | None
    content_uri: str | None
    content_hash: str
    status: str
    session_id: str | None
    created_at: datetime
    approved_event_id: UUID
    drifted: bool = False


@dataclass(frozen=True, slots=True)
class RecentChainEvent:
    """A recent chain event with its payload pretty-printed and cut to 300 characters."""

    event_id: UUID
    seq: int
    event_type: str
    occurred_at: datetime
    payload_excerpt: str


@dataclass(frozen=True, slots=True)
class ActiveConstitution:
    """The highest constitution revision of a workspace."""

    revision_id: UUID
    revision_number: int
    rules: dict[str, Any]
    rules_hash_hex: str


@dataclass(frozen=True, slots=True)
class IsoNode:
    """A node of the workspace knowledge graph."""

    node_id: UUID
    node_type: str
    title: str
    content: str
    properties: dict[str, Any]
    status: str
    superseded_by: UUID | None
    created_by: UUID
    created_at: datetime
    approved_event_id: UUID


@dataclass(frozen=True, slots=True)
class IsoLink:
    """A typed link between two nodes."""

    link_id: UUID
    from_node_id: UUID
    to_node_id: UUID
    link_type: str
    properties: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Escalation:
    """An escalation in the queue operators decide."""

    escalation_id: UUID
    actor_id: UUID
    tool: str
    rule_id: str | None
    reason: str
    status: str
    created_at: datetime
    decided_at: datetime | None
    decision_note: str | None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A convention or policy-change proposal."""

    proposal_kind: str
    proposal_id: UUID
    actor_id: UUID
    title: str
    detail: Any
    rationale: str
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KoraSessionContext:
    """Everything an agent session starts from, read in one go."""

    workspace_id: str
    assembled_at: datetime
    role_charter: RoleCharter | None
    identity_error: str | None
    policies: tuple[PolicyEntry, ...]
    capability_matrix_row: CapabilityRow
    own_scratchpad: tuple[ScratchpadEntry, ...]
    cross_agent_scratchpad: tuple[ScratchpadEntry, ...]
    recent_chain_events: tuple[RecentChainEvent, ...]
    active_constitution_revision_id: UUID | None
    active_constitution_rules_hash: str | None
