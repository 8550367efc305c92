"""The one typed shape of each write operation's arguments, from the tool to the SQL.

A gateway tool (or a CLI command) builds one of these models; :meth:`OperationArguments.sql_args`
is the JSON object ``isokron.op_<name>`` receives, key for key (a test reads the migrations and
checks that every field is an argument the SQL function reads, and the other way round).
Models forbid unknown fields, so a misspelt argument fails here, not in the database.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from isokron.governance.vocabulary import (
    EscalationDecision,
    ProposalDecision,
    ProposalKind,
    ScratchpadKind,
    Visibility,
)

__all__ = [
    "describe_validation_error",
    "AppendEventArgs",
    "DecideEscalationArgs",
    "DecideProposalArgs",
    "IsoLinkCreateArgs",
    "IsoNodeCreateArgs",
    "IsoNodeSupersedeArgs",
    "IssueTokenArgs",
    "OperationArguments",
    "ProposeConventionArgs",
    "ProposePolicyChangeArgs",
    "RaiseEscalationArgs",
    "RecordDenialArgs",
    "ReviseConstitutionArgs",
    "RevokeTokenArgs",
    "SetActorStatusArgs",
    "SetCapabilitiesArgs",
    "SetCharterArgs",
    "SetPoliciesArgs",
    "WriteScratchpadEntryArgs",
]


#: Most validation problems listed in one invalid_argument refusal.
MAX_LISTED_PROBLEMS = 8


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's findings as 'field: problem' phrases, without the rejected values."""
    problems = [
        f"{'.'.join(str(part) for part in err['loc']) or 'arguments'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    more = len(problems) - MAX_LISTED_PROBLEMS
    text = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    return text + (f"; and {more} more." if more > 0 else ".")


class OperationArguments(BaseModel):
    """Base of every operation's arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Fields sent even when None (JSON null is a value the operation accepts).
    keep_null: ClassVar[frozenset[str]] = frozenset()

    def sql_args(self) -> dict[str, Any]:
        """The JSON object the SQL operation receives (optional fields left out when None)."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if v is not None or k in self.keep_null}


class AppendEventArgs(OperationArguments):
    event_type: str
    payload: dict[str, Any] = Field(default_factory=dict)


class WriteScratchpadEntryArgs(OperationArguments):
    kind: ScratchpadKind
    summary: str
    content_hash: str
    content: str | None = None
    content_uri: str | None = None
    visibility_scope: Visibility = "own_only"
    session_id: str | None = None


class IsoNodeCreateArgs(OperationArguments):
    node_type: str
    title: str
    content: str | None = None
    properties: dict[str, Any] | None = None


class IsoNodeSupersedeArgs(OperationArguments):
    node_id: UUID
    reason: str | None = None
    title: str | None = None
    content: str | None = None
    properties: dict[str, Any] | None = None


class IsoLinkCreateArgs(OperationArguments):
    from_node_id: UUID
    to_node_id: UUID
    link_type: str
    properties: dict[str, Any] | None = None


class ProposeConventionArgs(OperationArguments):
    title: str
    body: str
    rationale: str | None = None


class ProposePolicyChangeArgs(OperationArguments):
    keep_null: ClassVar[frozenset[str]] = frozenset({"proposed_value"})
    policy_key: str
    proposed_value: Any
    rationale: str | None = None


class RaiseEscalationArgs(OperationArguments):
    tool: str
    reason: str
    rule_id: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)


class RecordDenialArgs(OperationArguments):
    tool: str
    code: str
    reason: str
    rule_id: str | None = None
    #: The refused call's arguments as text, redacted unless the workspace says otherwise
    #: (policy.kora_denial_events_redacted).
    arguments: str | None = None


class DecideProposalArgs(OperationArguments):
    proposal_kind: ProposalKind
    proposal_id: UUID
    decision: ProposalDecision
    note: str | None = None


class DecideEscalationArgs(OperationArguments):
    escalation_id: UUID
    decision: EscalationDecision
    note: str | None = None
    #: Approve even though the raiser no longer holds the capability: the held write runs as
    #: the deciding operator, and the decision event says so.
    override: bool | None = None


class SetCharterArgs(OperationArguments):
    content_md: str
    sections: dict[str, Any]


class SetPoliciesArgs(OperationArguments):
    policies: list[dict[str, Any]]


class SetCapabilitiesArgs(OperationArguments):
    capabilities: list[dict[str, Any]]


class ReviseConstitutionArgs(OperationArguments):
    rules: dict[str, Any]


class IssueTokenArgs(OperationArguments):
    holder_actor_id: UUID
    token_sha256: str
    token_prefix: str
    label: str | None = None
    expires_at: str | None = None


class RevokeTokenArgs(OperationArguments):
    token_id: UUID | None = None
    token_prefix: str | None = None


class SetActorStatusArgs(OperationArguments):
    actor_id: UUID
    status: Literal["active", "disabled"]
    reason: str | None = None
