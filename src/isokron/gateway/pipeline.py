"""The pure part of the gateway pipeline: one synchronous function that screens a call.

Every call goes through these stages, in this order; the first that objects decides::

    1 workspace     the call's workspace must be the token's          workspace_mismatch
    2 kill switch   policy.kora_disabled stops actor kind kora         kill_switch
    3 capability    the tool's capability, granted to the caller's     capability_denied
                    actor kind (unknown capability: denied)
    4 rate limit    (I/O: decided by the database, see service.py)     rate_limited
    5 size caps     policy.kora_max_payload_bytes on the serialized    too_large
                    arguments; scratchpad content and summary have
                    their own caps
    6 arguments     well-formed text (no NUL, no lone surrogates),      invalid_argument
                    nesting at most MAX_JSON_DEPTH, schema errors; a
                    hand-off event's task_summary when the workspace
                    requires it
    7 constitution  the active revision, compiled: allow, deny or      constitution_denied
                    escalate (writes only)                             (or an escalation)

:func:`screen` runs stages 1-3 and 5-7 without I/O against a cached :class:`Governance`
snapshot, so it can be timed on its own. Stage 4 needs the database; the caller combines its
answer with the verdict by stage order (:meth:`Verdict.before_rate_limit`).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from isokron.gateway.auth import Principal
from isokron.gateway.governance import Governance
from isokron.governance.operations import HANDOFF_EVENT_TYPES
from isokron.governance.policies import (
    HANDOFF_SUMMARY_REQUIRED,
    KILL_SWITCH,
    MAX_PAYLOAD,
    MAX_SCRATCHPAD_CONTENT,
    MAX_SUMMARY,
)
from isokron.governance.rules import compact_json_size

#: Deepest nesting of objects and lists accepted in a call's arguments.
MAX_JSON_DEPTH = 64
#: What a workspace id looks like (the substrate's CHECK on public.workspaces.id).
WORKSPACE_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")

NUL_PROBLEM = "text must not contain NUL characters (\\u0000); they cannot be stored."
SURROGATE_PROBLEM = (
    "text must be valid Unicode; lone surrogates (\\ud800-\\udfff) cannot be stored."
)

Effect = Literal["allow", "refuse", "escalate"]


class Stage(IntEnum):
    """The pipeline's stages, in the order they run."""

    AUTHENTICATION = 0
    WORKSPACE = 1
    KILL_SWITCH = 2
    CAPABILITY = 3
    RATE_LIMIT = 4
    SIZE = 5
    ARGUMENTS = 6
    CONSTITUTION = 7


@dataclass(frozen=True, slots=True)
class Screening:
    """A call as the pipeline screens it.

    ``arguments`` is what the call would write (the operation's arguments) for a write tool,
    the tool's arguments for a read tool, or the raw arguments of a call that failed schema
    validation (``argument_error`` then says how). ``inline_content`` and ``summary`` are a
    scratchpad entry's text, which have caps of their own; the inline content is left out of
    the payload cap. ``idempotency_key`` is stored with the write, so the constitution screens
    it as it screens the arguments (it is not counted in the payload cap).
    """

    tool: str
    capability: str | None
    writes: bool
    arguments: Mapping[str, Any]
    workspace_id: object = None
    event_type: str | None = None
    argument_error: str | None = None
    inline_content: str | None = None
    summary: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the pure stages decided, and at which stage."""

    effect: Effect
    stage: Stage | None = None
    code: str | None = None
    message: str = ""
    rule_id: str | None = None

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"

    @property
    def before_rate_limit(self) -> bool:
        """True for a refusal the rate limit cannot pre-empt (stages 1-3)."""
        return self.stage is not None and self.stage < Stage.RATE_LIMIT


ALLOWED = Verdict("allow")


def refuse(stage: Stage, code: str, message: str, rule_id: str | None = None) -> Verdict:
    """A refusal at ``stage``."""
    return Verdict("refuse", stage, code, message, rule_id)


def screen(principal: Principal, governance: Governance, call: Screening) -> Verdict:
    """Screen one call; pure and synchronous (the benchmarked pre-screen + authorization)."""
    requested = call.workspace_id
    if isinstance(requested, str) and requested != principal.workspace_id:
        # The refusal is chained and logged: quote the request only when it has a workspace
        # id's shape, never arbitrary text (a pasted secret cut short escapes redaction).
        other = (
            f"workspace {requested!r}"
            if WORKSPACE_ID_SHAPE.fullmatch(requested)
            else "another workspace (the workspace_id given is not a workspace id)"
        )
        return refuse(
            Stage.WORKSPACE,
            "workspace_mismatch",
            f"This token belongs to workspace {principal.workspace_id!r}; it cannot act on "
            f"{other}.",
        )
    if governance.stopped:
        return refuse(
            Stage.KILL_SWITCH,
            "kill_switch",
            f"Kora is switched off in this workspace ({KILL_SWITCH} is true); an operator must "
            "clear it before Kora can use the gateway again.",
        )
    if call.capability is None or not governance.capabilities.has(call.capability):
        return refuse(
            Stage.CAPABILITY,
            "capability_denied",
            f"Actor kind {principal.actor_kind!r} is not granted "
            f"{call.capability or 'any capability for this tool'} in this workspace, so "
            f"{call.tool} is refused.",
        )
    size = compact_json_size(call.arguments)
    verdict = _check_sizes(governance, call, size)
    if verdict is None:
        verdict = _check_arguments(call)
    if verdict is None and call.writes:
        verdict = _check_handoff(governance, call)
    if verdict is None and call.writes:
        verdict = _check_constitution(governance, call, size)
    return verdict or ALLOWED


def _check_sizes(governance: Governance, call: Screening, size: int) -> Verdict | None:
    payload = size
    if call.inline_content is not None:
        content_bytes = utf8_length(call.inline_content)
        if content_bytes > governance.max_scratchpad_content_bytes:
            return refuse(
                Stage.SIZE,
                "too_large",
                f"The inline content is {content_bytes} bytes, over this workspace's limit of "
                f"{governance.max_scratchpad_content_bytes} ({MAX_SCRATCHPAD_CONTENT}); store "
                "it elsewhere and pass content_uri with its content_hash instead.",
            )
        payload -= json_string_size(call.inline_content)
    if payload > governance.max_payload_bytes:
        return refuse(
            Stage.SIZE,
            "too_large",
            f"The call's arguments are {payload} bytes, over this workspace's limit of "
            f"{governance.max_payload_bytes} ({MAX_PAYLOAD}).",
        )
    if call.summary is not None:
        summary_bytes = utf8_length(call.summary)
        if summary_bytes > governance.max_summary_bytes:
            return refuse(
                Stage.SIZE,
                "too_large",
                f"The summary is {summary_bytes} bytes, over this workspace's limit of "
                f"{governance.max_summary_bytes} ({MAX_SUMMARY}); shorten it.",
            )
    return None


def _check_arguments(call: Screening) -> Verdict | None:
    problem = text_problem(call.arguments)
    if problem is None and call.argument_error is not None:
        problem = call.argument_error
    if problem is None:
        return None
    return refuse(
        Stage.ARGUMENTS, "invalid_argument", f"Invalid arguments for {call.tool}: {problem}"
    )


def _check_handoff(governance: Governance, call: Screening) -> Verdict | None:
    """A hand-off event must say what is handed off while the workspace requires it."""
    if not governance.handoff_summary_required or call.event_type is None:
        return None
    if not any(fnmatch.fnmatchcase(call.event_type, g) for g in HANDOFF_EVENT_TYPES):
        return None
    payload = call.arguments.get("payload")
    summary = payload.get("task_summary") if isinstance(payload, Mapping) else None
    if isinstance(summary, str) and summary.strip():
        return None
    return refuse(
        Stage.ARGUMENTS,
        "invalid_argument",
        f"A hand-off ({call.event_type}) needs a non-empty payload.task_summary in this "
        f"workspace ({HANDOFF_SUMMARY_REQUIRED} is true): say what the next agent takes over.",
    )


def _check_constitution(governance: Governance, call: Screening, size: int) -> Verdict | None:
    constitution = governance.constitution
    if constitution is None:
        if governance.constitution_fail_open:
            return None
        problem = governance.constitution_problem or "the constitution could not be loaded"
        return refuse(
            Stage.CONSTITUTION,
            "constitution_denied",
            f"Writes are refused because {problem}; an operator must add a valid revision.",
        )
    arguments = call.arguments
    if call.idempotency_key is not None:
        # The key is stored too (isokron.idempotency_keys): a secret-shaped key is denied.
        arguments = {**arguments, "idempotency_key": call.idempotency_key}
    decision = constitution.evaluate(
        tool=call.tool, event_type=call.event_type, arguments=arguments, serialized_size=size
    )
    if decision.effect == "allow":
        return None
    if decision.effect == "deny":
        return refuse(Stage.CONSTITUTION, "constitution_denied", decision.reason, decision.rule_id)
    return Verdict("escalate", Stage.CONSTITUTION, None, decision.reason, decision.rule_id)


def json_string_size(text: str) -> int:
    """Bytes ``text`` takes as a compact JSON string literal (as ``compact_json_size`` counts)."""
    return utf8_length(json.dumps(text, ensure_ascii=False))


def utf8_length(text: str) -> int:
    """Bytes ``text`` takes as UTF-8 (a lone surrogate counted as three, as CESU would)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def text_problem(arguments: Mapping[str, Any]) -> str | None:
    """Why the arguments cannot be stored as they are, or None.

    Finds NUL characters and lone UTF-16 surrogates in any string (keys included), which
    PostgreSQL text and JSONB cannot hold, and nesting deeper than ``MAX_JSON_DEPTH``. Walks
    with an explicit stack, so deep nesting cannot exhaust the interpreter's recursion limit.
    """
    for name, value in arguments.items():
        if isinstance(name, str) and bad_text(name) is not None:
            return "an argument name contains a NUL character or an invalid Unicode surrogate."
        problem = _value_problem(value)
        if problem is not None:
            return f"{name}: {problem}"
    return None


def bad_text(text: str) -> str | None:
    """Why ``text`` cannot be stored (a NUL, a lone surrogate), or None.

    Faster than a regex: ``in`` is a memchr, ``isascii`` reads a flag of the string, and only
    non-ASCII text is encoded (a lone surrogate is what makes UTF-8 encoding fail).
    """
    if "\x00" in text:
        return NUL_PROBLEM
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_PROBLEM
    return None


def _value_problem(value: Any) -> str | None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = bad_text(item)
            if problem is not None:
                return problem
        elif isinstance(item, Mapping):
            if depth >= MAX_JSON_DEPTH:
                return f"nested deeper than {MAX_JSON_DEPTH} levels."
            for key, child in item.items():
                if isinstance(key, str) and bad_text(key) is not None:
                    return "a key contains a NUL character or an invalid Unicode surrogate."
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            if depth >= MAX_JSON_DEPTH:
                return f"nested deeper than {MAX_JSON_DEPTH} levels."
            stack.extend((child, depth + 1) for child in item)
    return None
