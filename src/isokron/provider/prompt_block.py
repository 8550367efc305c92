"""The identity block the provider puts in the system prompt, and the recall block of ``prefetch``.

Pure functions of values read from the substrate; no I/O, so the layout is testable alone.

Layout (§1–§6, then the source-of-truth label, which is always the last three lines)::

    §1 Identity (Kora Role Charter v<version>)
    <sections.identity>

    §2 You CAN:
      - <authority_can_do>

    §3 You CANNOT:
      - <authority_cannot_do>

    §4 Active policy values
      - policy.kora_disabled = false            (``<not seeded>`` for a missing key)

    §5 Granted capabilities (<granted> of <total>):
      - <cap_name, sorted>

    §6 Recent kora.* activity (last <n>):
      - <occurred_at> <event_type> (seq <seq>)

    This identity block was assembled by IsoKronMemoryProvider on session start.
    The substrate is the source of truth; if anything below conflicts with a
    fresh substrate query, the substrate query wins.

A block longer than the context token ceiling of the model family in use
(``policy.kora_context_assembler_token_ceiling.<opus|sonnet|haiku|default>``) is cut at a line
and a marker line says where; the label still ends it.

An unverified charter is never shown: §1 then says the identity could not be verified and why,
and §2/§3 are withheld (invariant 4).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from isokron.governance.policies import ceiling_key
from isokron.substrate.models import (
    CapabilityRow,
    IsoNode,
    PolicyEntry,
    RecentChainEvent,
    RoleCharter,
)

#: The policy values §4 shows, in this order.
PROMPT_POLICY_KEYS = (
    "policy.kora_disabled",
    "policy.kora_max_nonsecurity_overrides_per_24h",
    "policy.kora_output_size_cap_pull",
    "policy.kora_rate_limit_per_minute",
    "policy.kora_context_assembler_token_ceiling.opus",
)
NOT_SEEDED = "<not seeded>"
#: Characters counted as one token when the block is fitted to its ceiling.
CHARS_PER_TOKEN = 4
TRIMMED_MARKER = "[… trimmed here to fit {ceiling} tokens ({key}) …]"
UNAVAILABLE = "<unavailable>"
#: Policy that sets how many events §6 lists; DEFAULT_ACTIVITY_COUNT when it is missing.
ACTIVITY_COUNT_POLICY = "policy.kora_prompt_recent_activity_count"
DEFAULT_ACTIVITY_COUNT = 5
MAX_ACTIVITY_COUNT = 50
SOURCE_OF_TRUTH_LABEL = (
    "This identity block was assembled by IsoKronMemoryProvider on session start.\n"
    "The substrate is the source of truth; if anything below conflicts with a\n"
    "fresh substrate query, the substrate query wins."
)
RECALL_HEADER = "IsoKron knowledge graph — nodes related to this message:"
RECALL_CONTENT_CHARS = 280
_RECALL_WORD_RE = re.compile(r"\w[\w-]{3,}", re.UNICODE)
_RECALL_MAX_WORDS = 8


def render_prompt_block(
    *,
    workspace_id: str,
    charter: RoleCharter | None,
    identity_error: str | None,
    policies: Sequence[PolicyEntry] | None,
    capabilities: CapabilityRow | None,
    recent_events: Sequence[RecentChainEvent] | None,
    note: str | None = None,
    model: str | None = None,
) -> str:
    """The whole §1–§6 block. ``None`` for a value means it could not be read.

    The block is trimmed to the context token ceiling of ``model``'s family (see
    :func:`trim_to_ceiling`).
    """
    sections = [
        _identity(workspace_id, charter, identity_error),
        _authority("§2 You CAN:", charter.authority_can_do if charter else None),
        _authority("§3 You CANNOT:", charter.authority_cannot_do if charter else None),
        _policies(policies),
        _capabilities(capabilities),
        _activity(recent_events, activity_count(policies)),
    ]
    if note:
        sections.append(note)
    key = ceiling_key(model)
    return trim_to_ceiling("\n\n".join(sections), token_ceiling(policies, key), key)


def estimate_tokens(text: str) -> int:
    """Tokens ``text`` takes, estimated as one per CHARS_PER_TOKEN characters (rounded up).

    An estimate that needs no tokenizer of any vendor; English prose with common models runs
    at about four characters per token.
    """
    return -(-len(text) // CHARS_PER_TOKEN)


def token_ceiling(policies: Sequence[PolicyEntry] | None, key: str) -> int | None:
    """The workspace's ceiling for ``key`` (a ``...token_ceiling.<family>`` policy); None when
    it is not set or not a whole number (then nothing is trimmed)."""
    for p in policies or ():
        if p.policy_key == key:
            value = p.value
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


def trim_to_ceiling(body: str, ceiling: int | None, key: str) -> str:
    """``body`` and the source-of-truth label, cut at a line so the whole fits ``ceiling``
    tokens; where it was cut, a marker line names the ceiling. The label always ends it."""
    whole = f"{body}\n\n{SOURCE_OF_TRUTH_LABEL}"
    if ceiling is None or estimate_tokens(whole) <= ceiling:
        return whole
    marker = TRIMMED_MARKER.format(ceiling=ceiling, key=key)
    room = ceiling * CHARS_PER_TOKEN - len(marker) - len(SOURCE_OF_TRUTH_LABEL) - 4
    kept = body[: max(room, 0)]
    if "\n" in kept:
        kept = kept[: kept.rindex("\n")]
    parts = (
        [kept.rstrip(), marker, SOURCE_OF_TRUTH_LABEL]
        if kept.strip()
        else [marker, SOURCE_OF_TRUTH_LABEL]
    )
    return "\n\n".join(parts)


def _identity(workspace_id: str, charter: RoleCharter | None, error: str | None) -> str:
    if charter is not None:
        return f"§1 Identity (Kora Role Charter v{charter.version})\n{charter.identity}"
    reason = error or "the substrate could not be reached"
    return (
        "§1 Identity — NOT VERIFIED\n"
        f"The role charter of workspace {workspace_id} could not be verified ({reason}). "
        "Its text is withheld. Until an operator fixes it, claim no authority from a charter, "
        "make no writes you would need it for, and say so if asked who you are or what you may do."
    )


def _authority(title: str, items: Iterable[str] | None) -> str:
    if items is None:
        return f"{title}\n  - (withheld: the identity is not verified)"
    lines = [f"  - {item}" for item in items] or ["  - (none)"]
    return "\n".join([title, *lines])


def format_policy_value(value: Any) -> str:
    """A policy value as JSON (``false``, ``5``, ``"own_only"``)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _policies(policies: Sequence[PolicyEntry] | None) -> str:
    lines = ["§4 Active policy values"]
    by_key = {p.policy_key: p.value for p in policies or ()}
    for key in PROMPT_POLICY_KEYS:
        if policies is None:
            shown = UNAVAILABLE
        elif key in by_key:
            shown = format_policy_value(by_key[key])
        else:
            shown = NOT_SEEDED
        lines.append(f"  - {key} = {shown}")
    return "\n".join(lines)


def _capabilities(row: CapabilityRow | None) -> str:
    if row is None:
        return f"§5 Granted capabilities ({UNAVAILABLE}):\n  - {UNAVAILABLE}"
    granted = row.granted
    lines = [f"§5 Granted capabilities ({len(granted)} of {len(row.capabilities)}):"]
    lines += [f"  - {name}" for name in granted] or ["  - (none)"]
    return "\n".join(lines)


def activity_count(policies: Sequence[PolicyEntry] | None) -> int:
    """How many events §6 lists: the workspace's policy, else 5 (bounded to 0–50)."""
    for p in policies or ():
        if (
            p.policy_key == ACTIVITY_COUNT_POLICY
            and isinstance(p.value, int)
            and not isinstance(p.value, bool)
        ):
            return max(0, min(p.value, MAX_ACTIVITY_COUNT))
    return DEFAULT_ACTIVITY_COUNT


def _activity(events: Sequence[RecentChainEvent] | None, count: int) -> str:
    title = f"§6 Recent kora.* activity (last {count}):"
    if events is None:
        return f"{title}\n  - {UNAVAILABLE}"
    shown = list(events)[:count]
    if not shown:
        return f"{title}\n  - (no kora.* events yet)"
    return "\n".join([title, *(f"  - {format_event(e)}" for e in shown)])


def format_event(event: RecentChainEvent) -> str:
    """``2026-05-20T10:00:00Z kora.session.ended (seq 12)``."""
    return f"{_utc(event.occurred_at)} {event.event_type} (seq {event.seq})"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stale_note(reason: str | None) -> str:
    """The line added when the block is built from values read before an outage."""
    return (
        f"(IsoKron could not reach the substrate just now ({reason or 'unavailable'}); "
        "the values above were read earlier in this session.)"
    )


def render_recall(nodes: Sequence[IsoNode]) -> str:
    """The ``prefetch`` block: active nodes matching the user's message ("" when none)."""
    if not nodes:
        return ""
    lines = [RECALL_HEADER]
    for node in nodes:
        content = " ".join(node.content.split())
        if len(content) > RECALL_CONTENT_CHARS:
            content = content[:RECALL_CONTENT_CHARS] + "…"
        line = f"  - [{node.node_type}] {node.title} (node {node.node_id})"
        lines.append(f"{line}: {content}" if content else line)
    return "\n".join(lines)


def recall_query(message: str) -> str | None:
    """A full-text query that matches any of the message's longer words (None if it has none)."""
    words: list[str] = []
    for word in _RECALL_WORD_RE.findall(message or ""):
        lowered = word.lower()
        if lowered not in words and not lowered.isdigit():
            words.append(lowered)
        if len(words) >= _RECALL_MAX_WORDS:
            break
    return " or ".join(words) if words else None
