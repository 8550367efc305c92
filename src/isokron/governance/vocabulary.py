"""The words of the governance model, each list written out once.

Actor kinds, scratchpad kinds and visibility scopes, proposal and escalation statuses, and the
refusal codes (defined with the error tree, :data:`isokron.errors.REFUSAL_CODES`). The SQL
CHECK constraints and the tools' schemas are checked against these lists by tests
(``tests/governance``).
"""

from __future__ import annotations

from typing import Literal, get_args

from isokron.errors import REFUSAL_CODES

__all__ = [
    "ACTOR_KINDS",
    "ACTOR_STATUSES",
    "CLAUDE_PM",
    "CRITIC",
    "ESCALATION_STATUSES",
    "KORA",
    "OPERATOR",
    "ORACLE",
    "PROPOSAL_KINDS",
    "PROPOSAL_STATUSES",
    "REFUSAL_CODES",
    "SCRATCHPAD_KINDS",
    "VISIBILITY_SCOPES",
    "ScratchpadKind",
    "Visibility",
]

KORA = "kora"
OPERATOR = "operator"
CRITIC = "critic"
ORACLE = "oracle"
CLAUDE_PM = "claude_pm"

#: The actors every new workspace is seeded with: ``actor_kind`` -> ``display_name``.
ACTOR_KINDS: dict[str, str] = {
    KORA: "Kora",
    OPERATOR: "Workspace operator",
    CRITIC: "Critic",
    ORACLE: "Oracle",
    CLAUDE_PM: "Claude PM",
}
ACTOR_STATUSES = ("active", "disabled")

ScratchpadKind = Literal[
    "reasoning_trail",
    "observation",
    "plan",
    "hypothesis",
    "decision_draft",
    "handoff_note",
    "tool_result",
]
#: The seven kinds of scratchpad entry.
SCRATCHPAD_KINDS: tuple[str, ...] = get_args(ScratchpadKind)

Visibility = Literal["own_only", "cross_agent_dereferenceable"]
#: Who may read a scratchpad entry: its actor kind only, or other agents too.
VISIBILITY_SCOPES: tuple[str, ...] = get_args(Visibility)

ProposalKind = Literal["convention", "policy_change"]
PROPOSAL_KINDS: tuple[str, ...] = get_args(ProposalKind)
#: ``expired``: closed by maintenance after policy.kora_proposal_expiry_days.
ProposalStatus = Literal["pending", "accepted", "rejected", "expired"]
PROPOSAL_STATUSES: tuple[str, ...] = get_args(ProposalStatus)
ProposalDecision = Literal["accepted", "rejected"]
#: ``expired``: closed by maintenance after policy.kora_escalation_sla_hours.
EscalationStatus = Literal["open", "approved", "rejected", "expired"]
ESCALATION_STATUSES: tuple[str, ...] = get_args(EscalationStatus)
EscalationDecision = Literal["approved", "rejected"]
