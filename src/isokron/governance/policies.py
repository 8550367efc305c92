"""The policy catalogue: every ``policy.*`` key a workspace is seeded with, and what it does.

Each :class:`Policy` says its default, its unit, what it does (the sentence ``isokron policy
list`` and ``docs/policies.md`` show) and which part of IsoKron reads it (``read_by``). The
seeding code copies key, default and description into ``kora_policy_registry``; from then on
**the table is the source of truth** and operators change it through the chained write
operations. Every key has a test that changes it and observes its effect
(``tests/governance/test_policy_coverage.py`` fails otherwise).

Readers: ``gateway`` (the pipeline, per call), ``database`` (SQL functions of the substrate,
in the transaction of the write or of maintenance), ``maintenance`` (``isokron maintain`` and
the gateway's periodic task), ``provider`` (the Hermes memory provider).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Reader = Literal["gateway", "database", "maintenance", "provider"]
Unit = Literal[
    "switch", "count", "writes", "bytes", "rows", "tokens", "seconds", "hours", "days", "mode"
]


@dataclass(frozen=True, slots=True)
class Policy:
    """One seeded policy: its key, default JSON value, unit, what it does, who reads it."""

    key: str
    default: Any
    unit: Unit
    description: str
    read_by: tuple[Reader, ...]

    @property
    def value(self) -> Any:
        """The seeded value (alias kept for the seeding rows)."""
        return self.default


def _p(key: str, default: Any, unit: Unit, read_by: str, description: str) -> Policy:
    readers: tuple[Reader, ...] = tuple(r for r in read_by.split() if r)  # type: ignore[misc]
    return Policy(f"policy.{key}", default, unit, description, readers)


KILL_SWITCH = "policy.kora_disabled"
OVERRIDES_PER_24H = "policy.kora_max_nonsecurity_overrides_per_24h"
OUTPUT_CAP = "policy.kora_output_size_cap_pull"
RATE_LIMIT = "policy.kora_rate_limit_per_minute"
CEILING_PREFIX = "policy.kora_context_assembler_token_ceiling."
MAX_PAYLOAD = "policy.kora_max_payload_bytes"
MAX_SCRATCHPAD_CONTENT = "policy.kora_max_scratchpad_content_bytes"
MAX_SUMMARY = "policy.kora_max_summary_bytes"
IDEMPOTENCY_TTL = "policy.kora_idempotency_ttl_hours"
RATE_BURST = "policy.kora_rate_limit_burst"
NODES_PER_MINUTE = "policy.kora_max_nodes_per_minute"
LINKS_PER_MINUTE = "policy.kora_max_links_per_minute"
PROPOSALS_PER_24H = "policy.kora_max_proposals_per_24h"
OPEN_ESCALATIONS = "policy.kora_max_open_escalations"
SCRATCHPAD_RETENTION = "policy.kora_scratchpad_retention_days"
DEFAULT_VISIBILITY = "policy.kora_scratchpad_default_visibility"
SCRATCHPAD_READ_LIMIT = "policy.kora_scratchpad_read_limit"
RECENT_EVENT_READ_LIMIT = "policy.kora_recent_event_read_limit"
ACTIVITY_COUNT = "policy.kora_prompt_recent_activity_count"
CACHE_TTL = "policy.kora_cache_ttl_seconds"
SEARCH_DEFAULT_LIMIT = "policy.kora_node_search_default_limit"
ESCALATION_SLA = "policy.kora_escalation_sla_hours"
PROPOSAL_EXPIRY = "policy.kora_proposal_expiry_days"
HANDOFF_SUMMARY_REQUIRED = "policy.kora_handoff_summary_required"
TOKEN_MAX_AGE = "policy.kora_service_token_max_age_days"
CONSTITUTION_FAILURE_MODE = "policy.kora_constitution_failure_mode"
SUBAGENT_WRITES = "policy.kora_subagent_writes_enabled"
DENIALS_REDACTED = "policy.kora_denial_events_redacted"

#: The model families with a context token ceiling of their own; any other model uses
#: ``.default``.
MODEL_FAMILIES = ("opus", "sonnet", "haiku")

_POLICIES: tuple[Policy, ...] = (
    # -- the five values seed 001 shows in the prompt block ------------------------------------
    _p("kora_disabled", False, "switch", "gateway",
       "Kill switch: while true the gateway refuses every call of a kora actor "
       "(refusal kill_switch)."),
    _p("kora_max_nonsecurity_overrides_per_24h", 5, "count", "gateway database",
       "Most non-security policy overrides (events kora.policy.override*) an actor may request "
       "in any rolling 24 hours; beyond it the request is refused rate_limited with a "
       "retry-after."),
    _p("kora_output_size_cap_pull", 500, "rows", "gateway provider",
       "Most rows one pull-style read (search, queue, scratchpad, proposals) returns, whatever "
       "limit the caller asks for."),
    _p("kora_rate_limit_per_minute", 60, "writes", "gateway database",
       "Most gateway writes an actor may make per clock minute (refusal rate_limited with a "
       "retry-after)."),
    _p("kora_context_assembler_token_ceiling.opus", 180000, "tokens", "provider",
       "Most tokens the provider's prompt block may take when the agent runs on an Opus-family "
       "model; a longer block is trimmed, with a marker where it was cut."),
    # -- model families ------------------------------------------------------------------------
    _p("kora_context_assembler_token_ceiling.sonnet", 180000, "tokens", "provider",
       "Most tokens the prompt block may take on a Sonnet-family model (trimmed, with a "
       "marker, beyond it)."),
    _p("kora_context_assembler_token_ceiling.haiku", 96000, "tokens", "provider",
       "Most tokens the prompt block may take on a Haiku-family model (trimmed, with a marker, "
       "beyond it)."),
    _p("kora_context_assembler_token_ceiling.default", 64000, "tokens", "provider",
       "Most tokens the prompt block may take on any model without a ceiling of its own "
       "(trimmed, with a marker, beyond it)."),
    # -- sizes the gateway enforces ------------------------------------------------------------
    _p("kora_max_payload_bytes", 65536, "bytes", "gateway",
       "Largest serialized size of one write's arguments (refusal too_large)."),
    _p("kora_max_scratchpad_content_bytes", 262144, "bytes", "gateway",
       "Largest inline scratchpad content (refusal too_large); bigger content goes by "
       "content_uri."),
    _p("kora_max_summary_bytes", 2048, "bytes", "gateway",
       "Largest scratchpad summary (refusal too_large)."),
    _p("kora_idempotency_ttl_hours", 24, "hours", "maintenance",
       "How long a write's idempotency key is kept; maintenance deletes older keys, after "
       "which the same key makes a new write."),
    # -- rates ---------------------------------------------------------------------------------
    _p("kora_rate_limit_burst", 10, "writes", "gateway database",
       "Most writes an actor may make within one clock second, however much of its "
       "per-minute budget is left (refusal rate_limited, retry after 1 second)."),
    _p("kora_max_nodes_per_minute", 30, "writes", "gateway database",
       "Most iso nodes an actor may create or supersede per clock minute (refusal "
       "rate_limited with a retry-after)."),
    _p("kora_max_links_per_minute", 60, "writes", "gateway database",
       "Most iso links an actor may create per clock minute (refusal rate_limited with a "
       "retry-after)."),
    _p("kora_max_proposals_per_24h", 10, "count", "gateway database",
       "Most convention and policy-change proposals an actor may file in any rolling 24 hours "
       "(refusal rate_limited with a retry-after)."),
    _p("kora_max_open_escalations", 25, "count", "gateway database",
       "Most undecided escalations an actor may have open at once; beyond it, new ones "
       "(raised or held by the constitution) are refused quota_exceeded."),
    # -- working memory ------------------------------------------------------------------------
    _p("kora_scratchpad_retention_days", 90, "days", "maintenance",
       "Days an active scratchpad entry is kept; maintenance archives older ones, each with a "
       "chained governance.scratchpad.archived event."),
    _p("kora_scratchpad_default_visibility", "own_only", "mode", "gateway",
       "Visibility of a scratchpad entry written without one: own_only or "
       "cross_agent_dereferenceable."),
    _p("kora_scratchpad_read_limit", 100, "rows", "provider",
       "Scratchpad entries the provider reads per session warm-up (own and cross-agent, each)."),
    _p("kora_recent_event_read_limit", 50, "rows", "provider",
       "Recent chain events the provider reads per session warm-up (the prompt block's "
       "activity section is drawn from them)."),
    _p("kora_prompt_recent_activity_count", 5, "rows", "provider",
       "Recent kora.* events listed in the prompt block's activity section (0-50)."),
    _p("kora_cache_ttl_seconds", 60, "seconds", "provider",
       "Seconds the memory provider may serve governance reads from its cache (at most its "
       "own configured TTL)."),
    _p("kora_node_search_default_limit", 20, "rows", "gateway",
       "Results an iso node search returns when the caller gives no limit."),
    # -- decisions -----------------------------------------------------------------------------
    _p("kora_escalation_sla_hours", 24, "hours", "maintenance",
       "Hours an escalation may stay open; maintenance then closes it as expired with a "
       "chained governance.escalation.expired event (the held write is not made)."),
    _p("kora_proposal_expiry_days", 14, "days", "maintenance",
       "Days a proposal may stay pending; maintenance then closes it as expired with a chained "
       "governance.proposal.expired event (it must be filed again)."),
    _p("kora_handoff_summary_required", True, "switch", "gateway",
       "While true, a hand-off event (kora.handoff.*) without a non-empty task_summary is "
       "refused invalid_argument."),
    # -- security posture ----------------------------------------------------------------------
    _p("kora_service_token_max_age_days", 90, "days", "gateway",
       "Days a service token is accepted after it was issued; an older token is refused "
       "unauthenticated and must be replaced (0: no limit)."),
    _p("kora_constitution_failure_mode", "deny", "mode", "gateway",
       "What the gateway does with writes when the constitution cannot be loaded: deny (fail "
       "closed) or allow."),
    _p("kora_subagent_writes_enabled", False, "switch", "provider",
       "Whether the provider writes from subagent, cron and flush agent contexts; while false "
       "only the primary context writes."),
    _p("kora_denial_events_redacted", True, "switch", "gateway",
       "Whether a denial event's copy of the refused arguments has secret-shaped text "
       "replaced by [REDACTED] (true) or is kept as sent (false)."),
)  # fmt: skip

#: The 31 seeded policies: ``policy_key`` -> :class:`Policy`.
POLICIES: dict[str, Policy] = {p.key: p for p in _POLICIES}


def ceiling_key(model: str | None) -> str:
    """The token-ceiling policy of the model family ``model`` belongs to (by name)."""
    lowered = (model or "").lower()
    for family in MODEL_FAMILIES:
        if family in lowered:
            return CEILING_PREFIX + family
    return CEILING_PREFIX + "default"


_TRUE_WORDS = frozenset({"true", "on", "yes", "1"})
_FALSE_WORDS = frozenset({"false", "off", "no", "0", ""})


def flag(value: Any) -> bool:
    """A policy value read as a switch; anything unrecognisable counts as on (fail closed)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _FALSE_WORDS:
            return False
        if word in _TRUE_WORDS:
            return True
    return True


def whole_number(values: Mapping[str, Any], key: str) -> int | None:
    """A non-negative integer policy value, or None when it is missing or malformed."""
    value = values.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


DOCS_BEGIN = "<!-- policies:begin (generated from isokron.governance.policies) -->"
DOCS_END = "<!-- policies:end -->"


def policies_markdown() -> str:
    """The policy table of ``docs/policies.md`` (checked against the catalogue by a test)."""
    lines = [
        DOCS_BEGIN,
        "| policy | default | unit | read by | what it does |",
        "|---|---|---|---|---|",
    ]
    for policy in POLICIES.values():
        default = json.dumps(policy.default)
        readers = ", ".join(policy.read_by)
        lines.append(
            f"| `{policy.key}` | `{default}` | {policy.unit} | {readers} | {policy.description} |"
        )
    lines.append(DOCS_END)
    return "\n".join(lines)
