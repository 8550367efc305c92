"""The ONE catalogue of what can be done to a workspace, and what governs each thing.

Three tables, each written out once:

``OPERATIONS``
    The substrate's write operations (``isokron.op_<name>`` in SQL, dispatched by name; their
    capability and governance flag are ``isokron.operation_registry``): kind, the capability the
    database checks, the chain event type(s) it appends, its argument model
    (:mod:`isokron.governance.arguments`), and the CLI commands that perform it.
``TOOLS``
    The gateway's MCP tools: the capability the pipeline checks, the operation a write tool
    performs (reads name none), the quotas that apply and the policies that govern it.
``MODEL_TOOLS``
    The tools the Hermes provider gives the model: a read (with its capability) or a write that
    is a call of a gateway tool.

Tests check the gateway's registered tools, the provider's schemas, the CLI's commands,
``docs/gateway.md`` and the database catalog (``isokron.operation_registry`` and the
``isokron.op_*`` functions in ``pg_proc``) against these tables.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from isokron.governance import arguments as a
from isokron.governance import policies as p

OperationKind = Literal["agent", "decision", "governance", "internal"]


@dataclass(frozen=True, slots=True)
class Quota:
    """A counted limit on writes of one actor, enforced in the write's own transaction.

    ``window_seconds`` is the counting window (clock-aligned below an hour, rolling by the hour
    above); 0 means the quota counts current state (open escalations) rather than writes.
    ``event_types`` narrows it to writes whose event type matches one of the globs.
    """

    bucket: str
    policy: str
    window_seconds: int
    code: str = "rate_limited"
    event_types: tuple[str, ...] = ()

    def applies_to(self, event_type: str | None) -> bool:
        if not self.event_types:
            return True
        return event_type is not None and any(
            fnmatch.fnmatchcase(event_type, g) for g in self.event_types
        )


WRITES = Quota("writes", p.RATE_LIMIT, 60)
BURST = Quota("burst", p.RATE_BURST, 1)
NODES = Quota("nodes", p.NODES_PER_MINUTE, 60)
LINKS = Quota("links", p.LINKS_PER_MINUTE, 60)
PROPOSALS = Quota("proposals", p.PROPOSALS_PER_24H, 86400)
OVERRIDES = Quota("overrides", p.OVERRIDES_PER_24H, 86400, event_types=("kora.policy.override*",))
OPEN_ESCALATIONS = Quota("open_escalations", p.OPEN_ESCALATIONS, 0, code="quota_exceeded")
#: Every write tool call counts against these.
WRITE_QUOTAS = (WRITES, BURST)


@dataclass(frozen=True, slots=True)
class Operation:
    """One write operation of the substrate (``isokron.op_<name>``)."""

    name: str
    kind: OperationKind
    capability: str | None
    event_types: tuple[str, ...]
    arguments: type[a.OperationArguments]
    quotas: tuple[Quota, ...] = ()
    cli: tuple[str, ...] = ()

    @property
    def governance(self) -> bool:
        """Governance operations and decisions need an operator's credential (the registry's
        ``governance`` flag)."""
        return self.kind in ("governance", "decision")


def _op(
    name: str,
    kind: OperationKind,
    capability: str | None,
    events: str,
    args: type[a.OperationArguments],
    *,
    quotas: tuple[Quota, ...] = (),
    cli: tuple[str, ...] = (),
) -> Operation:
    return Operation(name, kind, capability, tuple(events.split()), args, quotas, cli)


_OPERATIONS = (
    _op("append_event", "agent", "cap_append_event", "*", a.AppendEventArgs, quotas=(OVERRIDES,)),
    _op("write_scratchpad_entry", "agent", "cap_write_agent_scratchpad",
        "kora.scratchpad.written", a.WriteScratchpadEntryArgs),
    _op("iso_node_create", "agent", "cap_iso_node_create", "kora.node.created",
        a.IsoNodeCreateArgs, quotas=(NODES,)),
    _op("iso_node_supersede", "agent", "cap_iso_node_supersede", "kora.node.superseded",
        a.IsoNodeSupersedeArgs, quotas=(NODES,)),
    _op("iso_link_create", "agent", "cap_iso_link_create", "kora.link.created",
        a.IsoLinkCreateArgs, quotas=(LINKS,)),
    _op("propose_convention", "agent", "cap_propose_convention", "kora.convention.proposed",
        a.ProposeConventionArgs, quotas=(PROPOSALS,)),
    _op("propose_policy_change", "agent", "cap_propose_policy_change",
        "kora.policy_change.proposed", a.ProposePolicyChangeArgs, quotas=(PROPOSALS,)),
    # Raised by an agent's tool call (which needs cap_raise_escalation) or by the gateway when
    # the constitution holds a write of any tool: the database asks no capability of its own.
    _op("raise_escalation", "agent", None, "kora.escalation.raised", a.RaiseEscalationArgs,
        quotas=(OPEN_ESCALATIONS,)),
    _op("record_denial", "internal", None, "gateway.write.denied", a.RecordDenialArgs),
    _op("decide_proposal", "decision", "cap_decide_proposal", "governance.proposal.decided",
        a.DecideProposalArgs, cli=("proposal decide",)),
    _op("decide_escalation", "decision", "cap_decide_escalation",
        "governance.escalation.decided", a.DecideEscalationArgs, cli=("escalation decide",)),
    _op("set_charter", "governance", None, "governance.charter.set", a.SetCharterArgs,
        cli=("charter set",)),
    _op("set_policies", "governance", None, "governance.policy.set", a.SetPoliciesArgs,
        cli=("policy set",)),
    _op("set_capabilities", "governance", None, "governance.capability.set",
        a.SetCapabilitiesArgs, cli=("capability set",)),
    _op("revise_constitution", "governance", None, "governance.constitution.revised",
        a.ReviseConstitutionArgs, cli=("constitution set",)),
    _op("issue_token", "governance", None, "governance.token.issued", a.IssueTokenArgs,
        cli=("token issue",)),
    _op("revoke_token", "governance", None, "governance.token.revoked", a.RevokeTokenArgs,
        cli=("token revoke",)),
    _op("set_actor_status", "governance", None,
        "governance.actor.disabled governance.actor.enabled", a.SetActorStatusArgs,
        cli=("actor disable", "actor enable")),
)  # fmt: skip

#: Every write operation by name.
OPERATIONS: dict[str, Operation] = {op.name: op for op in _OPERATIONS}

#: Event types maintenance appends (``isokron maintain``, the gateway's periodic task); they
#: are not operations anyone calls, so they are not in the registry.
MAINTENANCE_EVENT_TYPES = (
    "governance.escalation.expired",
    "governance.proposal.expired",
    "governance.scratchpad.archived",
)
#: The CLI command that runs maintenance.
MAINTENANCE_CLI = "maintain"


@dataclass(frozen=True, slots=True)
class Tool:
    """One gateway MCP tool: what it needs, what it does, what limits it."""

    name: str
    capability: str
    operation: str | None = None
    event_type: str | None = None
    policies: tuple[str, ...] = ()

    @property
    def writes(self) -> bool:
        return self.operation is not None

    @property
    def quotas(self) -> tuple[Quota, ...]:
        """The quotas a call of this tool counts against (writes only)."""
        if self.operation is None:
            return ()
        return WRITE_QUOTAS + OPERATIONS[self.operation].quotas


_WRITE_POLICIES = (
    p.KILL_SWITCH,
    p.RATE_LIMIT,
    p.RATE_BURST,
    p.MAX_PAYLOAD,
    p.CONSTITUTION_FAILURE_MODE,
    p.DENIALS_REDACTED,
    p.TOKEN_MAX_AGE,
)
_READ_POLICIES = (p.KILL_SWITCH, p.OUTPUT_CAP, p.TOKEN_MAX_AGE)


def _write(name: str, capability: str, operation: str, event_type: str | None, *extra: str) -> Tool:
    quota_policies = tuple(q.policy for q in OPERATIONS[operation].quotas)
    return Tool(name, capability, operation, event_type, _WRITE_POLICIES + quota_policies + extra)


def _read(name: str, capability: str, *extra: str) -> Tool:
    return Tool(name, capability, policies=_READ_POLICIES + extra)


HANDOFF_EVENT_TYPES = ("kora.handoff.*",)

_TOOLS = (
    _write("kora__append_event", "cap_append_event", "append_event", None,
           p.HANDOFF_SUMMARY_REQUIRED),
    _write("kora__write_agent_scratchpad", "cap_write_agent_scratchpad",
           "write_scratchpad_entry", "kora.scratchpad.written",
           p.MAX_SCRATCHPAD_CONTENT, p.MAX_SUMMARY, p.DEFAULT_VISIBILITY),
    _read("kora__read_agent_scratchpad", "cap_read_agent_scratchpad"),
    _read("kora__read_kora_capability_row", "cap_read_capability_row"),
    _write("kora__propose_convention", "cap_propose_convention", "propose_convention",
           "kora.convention.proposed"),
    _write("kora__propose_policy_change", "cap_propose_policy_change", "propose_policy_change",
           "kora.policy_change.proposed"),
    _write("kora__raise_escalation", "cap_raise_escalation", "raise_escalation",
           "kora.escalation.raised"),
    _read("kora__read_escalation_queue", "cap_read_escalation_queue"),
    _read("kora__read_proposals", "cap_read_proposals"),
    _write("iso_node_create", "cap_iso_node_create", "iso_node_create", "kora.node.created"),
    _read("iso_node_get", "cap_iso_node_read"),
    _read("iso_node_search", "cap_iso_node_read", p.SEARCH_DEFAULT_LIMIT),
    _write("iso_node_supersede", "cap_iso_node_supersede", "iso_node_supersede",
           "kora.node.superseded"),
    _write("iso_link_create", "cap_iso_link_create", "iso_link_create", "kora.link.created"),
    _write("kora__decide_proposal", "cap_decide_proposal", "decide_proposal", None),
    _write("kora__decide_escalation", "cap_decide_escalation", "decide_escalation", None),
)  # fmt: skip

#: The gateway's tools by name.
TOOLS: dict[str, Tool] = {t.name: t for t in _TOOLS}

#: Rows a read returns when the caller gives no limit (the pull cap still applies); the gateway
#: and the provider's model tools use the same default.
DEFAULT_READ_LIMIT = 50


@dataclass(frozen=True, slots=True)
class ModelTool:
    """A tool the provider gives the model: a direct read, or a write through a gateway tool."""

    name: str
    capability: str
    gateway_tool: str | None = None

    @property
    def writes(self) -> bool:
        return self.gateway_tool is not None


_MODEL_TOOLS = (
    ModelTool("iso_node_create", "cap_iso_node_create", "iso_node_create"),
    ModelTool("iso_node_get", "cap_iso_node_read"),
    ModelTool("iso_node_search", "cap_iso_node_read"),
    ModelTool("iso_node_supersede", "cap_iso_node_supersede", "iso_node_supersede"),
    ModelTool("iso_link_create", "cap_iso_link_create", "iso_link_create"),
    ModelTool("kora_scratchpad_read", "cap_read_agent_scratchpad"),
    ModelTool(
        "kora_scratchpad_write", "cap_write_agent_scratchpad", "kora__write_agent_scratchpad"
    ),
    ModelTool("kora_escalation_queue_read", "cap_read_escalation_queue"),
)

#: The provider's model tools by name.
MODEL_TOOLS: dict[str, ModelTool] = {t.name: t for t in _MODEL_TOOLS}


def tool_capability(tool: str) -> str | None:
    """The capability a gateway tool needs (None for an unknown tool: denied)."""
    found = TOOLS.get(tool)
    return None if found is None else found.capability


def quotas_for(operation: str, event_type: str | None) -> tuple[Quota, ...]:
    """The quotas a tool call performing ``operation`` (appending ``event_type``) counts
    against: every write's, plus the operation's own. A refused call (``record_denial``)
    counts against every write's only."""
    found = OPERATIONS.get(operation)
    own = () if found is None else found.quotas
    return WRITE_QUOTAS + tuple(q for q in own if q.applies_to(event_type))
