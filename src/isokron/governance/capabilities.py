"""The capability matrix a workspace is seeded with: 49 capabilities and who is granted each.

24 ``sea`` capabilities (the shared workspace surface) and 25 ``kora_broader`` ones (the agent's
own identity, memory and governance levers). Seeding copies them into
``public.kora_capability_matrix``, which is then the source of truth (invariant 6: an unknown
capability is denied). Which capability each operation needs is in
:mod:`isokron.governance.operations`.
"""

from __future__ import annotations

from dataclasses import dataclass

from isokron.governance.vocabulary import ACTOR_KINDS, CLAUDE_PM, CRITIC, KORA, OPERATOR, ORACLE

SEA = "sea"
KORA_BROADER = "kora_broader"


@dataclass(frozen=True)
class Capability:
    """One row of the capability matrix: a capability and the actor kinds granted it.

    The operator kind is granted every capability; kinds not listed are denied (and an
    unknown capability is denied to everyone, invariant 6).
    """

    cap_name: str
    group: str
    description: str
    grants: frozenset[str]


# Grant sets, spelled once so that the table below reads as "who may do this".
_OP = frozenset({OPERATOR})
_ALL = frozenset(ACTOR_KINDS)
_AGENTS_READ = _ALL  # reads of shared governance state: every actor
_PROPOSERS = frozenset({KORA, OPERATOR, CRITIC, ORACLE, CLAUDE_PM})
_WRITERS = frozenset({KORA, OPERATOR, ORACLE, CLAUDE_PM})
_AUDITORS = frozenset({OPERATOR, CRITIC, ORACLE})


def _cap(name: str, group: str, grants: frozenset[str], description: str) -> Capability:
    """Build a capability row; the operator is always granted."""
    return Capability(name, group, description, grants | _OP)


_K = frozenset({KORA})

CAPABILITIES: tuple[Capability, ...] = (
    # -- sea: the shared workspace surface (knowledge graph, conventions, decisions) -----------
    _cap("cap_iso_node_create", SEA, _WRITERS, "Create an iso node in the knowledge graph."),
    _cap("cap_iso_node_read", SEA, _AGENTS_READ, "Get and search iso nodes."),
    _cap(
        "cap_iso_node_supersede",
        SEA,
        _WRITERS,
        "Supersede an iso node with a newer one (emits kora.node.superseded).",
    ),
    _cap("cap_iso_link_create", SEA, _WRITERS, "Create a typed link between two iso nodes."),
    _cap("cap_iso_link_read", SEA, _AGENTS_READ, "Read the typed links of iso nodes."),
    _cap(
        "cap_iso_node_archive",
        SEA,
        frozenset({CLAUDE_PM}),
        "Archive an iso node without a successor.",
    ),
    _cap("cap_iso_link_remove", SEA, frozenset(), "Retire a link between two iso nodes."),
    _cap("cap_propose_convention", SEA, _PROPOSERS, "File a convention proposal."),
    _cap("cap_read_conventions", SEA, _AGENTS_READ, "Read blessed and proposed conventions."),
    _cap("cap_bless_convention", SEA, frozenset(), "Bless a proposed convention."),
    _cap("cap_unbless_convention", SEA, frozenset(), "Withdraw a blessed convention."),
    _cap("cap_propose_policy_change", SEA, _PROPOSERS, "File a policy-change proposal."),
    _cap("cap_read_policy_registry", SEA, _AGENTS_READ, "Read the policy registry."),
    _cap("cap_set_policy", SEA, frozenset(), "Set a policy value."),
    _cap("cap_decide_proposal", SEA, frozenset(), "Accept or reject a proposal."),
    _cap("cap_read_proposals", SEA, _AGENTS_READ, "Read proposals and their decisions."),
    _cap("cap_read_escalation_queue", SEA, _AGENTS_READ, "Read the escalation queue."),
    _cap("cap_raise_escalation", SEA, _PROPOSERS, "Put an item on the escalation queue."),
    _cap("cap_decide_escalation", SEA, frozenset(), "Decide an escalated item."),
    _cap("cap_read_event_log", SEA, _AGENTS_READ, "Read the workspace's chain events."),
    _cap("cap_verify_chain", SEA, _AUDITORS, "Re-compute and verify the workspace chain."),
    _cap("cap_export_chain", SEA, frozenset(), "Export the chain for offline audit."),
    _cap(
        "cap_erase_payload",
        SEA,
        frozenset(),
        "Replace an event payload with a tombstone that keeps its digest (lawful erasure).",
    ),
    _cap("cap_read_constitution", SEA, _AGENTS_READ, "Read the active constitution revision."),
    # -- kora_broader: the agent's own identity, memory and governance levers ------------------
    _cap(
        "cap_append_event",
        KORA_BROADER,
        _ALL,
        "Append an event to the chain (governance.* and gateway.* are denied by the constitution).",
    ),
    _cap(
        "cap_write_agent_scratchpad",
        KORA_BROADER,
        _ALL,
        "Write an entry to one's own agent scratchpad.",
    ),
    _cap(
        "cap_read_agent_scratchpad",
        KORA_BROADER,
        _ALL,
        "Read one's own scratchpad and entries others marked cross-agent dereferenceable.",
    ),
    _cap(
        "cap_read_cross_agent_scratchpad",
        KORA_BROADER,
        _ALL,
        "List other agents' cross-agent dereferenceable scratchpad entries.",
    ),
    _cap(
        "cap_read_capability_row",
        KORA_BROADER,
        _ALL,
        "Read one's own row of the capability matrix.",
    ),
    _cap("cap_read_role_charter", KORA_BROADER, _ALL, "Read the active role charter."),
    _cap(
        "cap_handoff_to_claude_pm",
        KORA_BROADER,
        _K,
        "Hand a task to Claude PM (emits kora.handoff.to_claude_pm).",
    ),
    _cap(
        "cap_request_nonsecurity_override",
        KORA_BROADER,
        _K,
        "Request a non-security policy override; capped per 24 h and always escalated.",
    ),
    _cap("cap_set_role_charter", KORA_BROADER, frozenset(), "Publish a new role charter."),
    _cap("cap_amend_constitution", KORA_BROADER, frozenset(), "Add a constitution revision."),
    _cap("cap_issue_service_token", KORA_BROADER, frozenset(), "Issue a wsk_ service token."),
    _cap("cap_revoke_service_token", KORA_BROADER, frozenset(), "Revoke a service token."),
    _cap("cap_grant_capability", KORA_BROADER, frozenset(), "Grant a capability to an actor."),
    _cap("cap_revoke_capability", KORA_BROADER, frozenset(), "Revoke an actor's capability."),
    _cap(
        "cap_toggle_kill_switch",
        KORA_BROADER,
        frozenset(),
        "Set or clear policy.kora_disabled.",
    ),
    _cap(
        "cap_override_security_policy",
        KORA_BROADER,
        frozenset(),
        "Override a security policy for a bounded time.",
    ),
    _cap("cap_create_workspace", KORA_BROADER, frozenset(), "Create a workspace."),
    _cap("cap_register_actor", KORA_BROADER, frozenset(), "Register an actor in a workspace."),
    _cap("cap_deactivate_actor", KORA_BROADER, frozenset(), "Deactivate an actor."),
    _cap(
        "cap_purge_scratchpad_entry",
        KORA_BROADER,
        frozenset(),
        "Purge a scratchpad entry's content, keeping its BLAKE3 hash.",
    ),
    _cap(
        "cap_read_any_agent_scratchpad",
        KORA_BROADER,
        frozenset({CRITIC}),
        "Read any agent's scratchpad, including own-only entries (for review).",
    ),
    _cap(
        "cap_review_agent_output",
        KORA_BROADER,
        frozenset({CRITIC}),
        "Record a critique of an agent's output for an operator.",
    ),
    _cap(
        "cap_attest_fact",
        KORA_BROADER,
        frozenset({ORACLE}),
        "Attest an iso node as verified against an authoritative source.",
    ),
    _cap(
        "cap_delegate_to_subagent",
        KORA_BROADER,
        frozenset({CLAUDE_PM}),
        "Dispatch work to a subagent on the workspace's behalf.",
    ),
    _cap(
        "cap_send_external_message",
        KORA_BROADER,
        frozenset(),
        "Send a message outside the workspace (email, chat, webhooks).",
    ),
)


def granted_capabilities(actor_kind: str) -> frozenset[str]:
    """Names of the default capabilities granted to ``actor_kind`` (empty if unknown)."""
    return frozenset(c.cap_name for c in CAPABILITIES if actor_kind in c.grants)
