"""The constitution's rules engine: rules as data, evaluated deterministically before every write.

The gateway pre-screens each write with the active constitution revision. A revision's
``rules`` JSON has this shape::

    {"version": 1,
     "rules": [
       {"id": "deny-secret-wsk",            # unique within the revision
        "effect": "deny" | "escalate",
        "description": "workspace service key",   # optional; shown in refusals
        "match": {                           # every condition given must hold
          "content_pattern": "<python regex>",     # searched in every string (keys and
                                                   # values) anywhere in the arguments
          "event_type": ["governance.*"],          # fnmatch-style globs (case-sensitive)
                                                   # against the write's event type
          "max_bytes": 65536,                      # serialized arguments larger than this
          "tool": ["iso_node_create"]              # gateway tool names (globs allowed)
        }}]}

Precedence: any matching ``deny`` rule wins over any ``escalate`` rule, which wins over the
implicit allow; among rules of one effect the first in order names the decision. A write with
no event type never matches an ``event_type`` condition.

The evaluator is on the hot path of every write, so everything is compiled once
(``Constitution.from_rules``): all content patterns of one effect are folded into a single
alternation that answers "does any rule of this effect match?" in one regex pass per string,
and strings shorter than the shortest possible match are skipped. Only when that pass finds
something are the rules tested one by one, in order, to name the winner.

Reasons never quote the matched text: a refusal must not echo the secret it refused.
:mod:`isokron.governance.redaction` applies the same secret shapes to log lines and diagnostics.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from isokron.errors import ConfigError
from isokron.governance.patterns import build_scanner
from isokron.governance.redaction import redact_secrets, redactor_with
from isokron.governance.seeds import DEFAULT_CONSTITUTION_RULES

Effect = Literal["allow", "deny", "escalate"]

_EFFECTS = ("deny", "escalate")
_MATCH_KEYS = frozenset({"content_pattern", "event_type", "max_bytes", "tool"})
_RULE_KEYS = frozenset({"id", "effect", "description", "match"})
_TOP_KEYS = frozenset({"version", "rules", "description"})
_RULE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Characters json.dumps escapes even with ensure_ascii=False.
_NEEDS_JSON_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


@dataclass(frozen=True)
class Decision:
    """The outcome of screening one write.

    ``reason`` is a sentence for a person; it names the rule but never the matched content.
    """

    effect: Effect
    rule_id: str | None
    reason: str

    @property
    def allowed(self) -> bool:
        """True when the write may proceed."""
        return self.effect == "allow"


ALLOW = Decision("allow", None, "no constitution rule matched the write")


# ---------------------------------------------------------------------------------------------
# Compiled rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """One validated rule with its conditions compiled."""

    rule_id: str
    effect: str
    description: str
    pattern: re.Pattern[str] | None
    event_types: re.Pattern[str] | None
    tools: re.Pattern[str] | None
    max_bytes: int | None

    def matches(
        self,
        tool: str,
        event_type: str | None,
        strings: Sequence[str],
        size: int,
    ) -> bool:
        """True when every condition of the rule holds; cheap conditions are tested first."""
        if self.tools is not None and self.tools.match(tool) is None:
            return False
        if self.event_types is not None and (
            event_type is None or self.event_types.match(event_type) is None
        ):
            return False
        if self.max_bytes is not None and size <= self.max_bytes:
            return False
        if self.pattern is not None:
            search = self.pattern.search
            return any(search(s) is not None for s in strings)
        return True


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _rule_error(rule_id: str, problem: str) -> ConfigError:
    """A ConfigError that names the offending rule."""
    return ConfigError(f"constitution rule {rule_id!r}: {problem}")


def _globs(rule_id: str, key: str, value: Any) -> re.Pattern[str]:
    """Compile a glob or list of globs into one anchored regex."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise _rule_error(rule_id, f"match.{key} must be a non-empty list of non-empty strings")
    # fnmatch.translate anchors each glob with \Z; folded into one alternation they are tested
    # together.
    return re.compile("|".join(f"(?:{fnmatch.translate(i)})" for i in items))


def _content_pattern(rule_id: str, value: Any) -> re.Pattern[str]:
    """Compile and sanity-check a rule's content pattern."""
    if not isinstance(value, str) or not value:
        raise _rule_error(rule_id, "match.content_pattern must be a non-empty regex string")
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise _rule_error(rule_id, f"match.content_pattern is not a valid regex ({exc})") from exc
    if compiled.search("") is not None:
        raise _rule_error(
            rule_id,
            "match.content_pattern matches the empty string, so it would match every write",
        )
    return compiled


def _max_bytes(rule_id: str, value: Any) -> int:
    """Validate a rule's size limit."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _rule_error(rule_id, "match.max_bytes must be a non-negative integer")
    return value


def _rule_id(index: int, raw: Mapping[str, Any]) -> str:
    """Validate and return a rule's id."""
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _RULE_ID_RE.match(rule_id):
        raise ConfigError(
            f"constitution rule #{index + 1} needs an 'id': letters, digits and ._:- "
            f"(got {rule_id!r})"
        )
    return rule_id


def _compile_rule(index: int, raw: Any) -> _Rule:
    """Validate one rule object and compile its conditions."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"constitution rule #{index + 1} must be an object")
    rule_id = _rule_id(index, raw)
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise _rule_error(rule_id, f"unknown keys {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
    effect = raw.get("effect")
    if effect not in _EFFECTS:
        raise _rule_error(rule_id, f"effect must be one of {list(_EFFECTS)} (got {effect!r})")
    description = raw.get("description", rule_id)
    if not isinstance(description, str):
        raise _rule_error(rule_id, "description must be a string")
    match = raw.get("match")
    if not isinstance(match, Mapping) or not match:
        raise _rule_error(rule_id, f"match must be an object with some of {sorted(_MATCH_KEYS)}")
    unknown = set(match) - _MATCH_KEYS
    if unknown:
        raise _rule_error(
            rule_id, f"unknown match keys {sorted(unknown)}; allowed: {sorted(_MATCH_KEYS)}"
        )
    return _Rule(
        rule_id=rule_id,
        effect=effect,
        description=description.strip() or rule_id,
        pattern=(
            _content_pattern(rule_id, match["content_pattern"])
            if "content_pattern" in match
            else None
        ),
        event_types=(
            _globs(rule_id, "event_type", match["event_type"]) if "event_type" in match else None
        ),
        tools=_globs(rule_id, "tool", match["tool"]) if "tool" in match else None,
        max_bytes=_max_bytes(rule_id, match["max_bytes"]) if "max_bytes" in match else None,
    )


def _compile_rules(rules: Any) -> tuple[_Rule, ...]:
    """Validate a revision's rules document and compile every rule in it."""
    if not isinstance(rules, Mapping):
        raise ConfigError("constitution rules must be an object with a 'rules' list")
    unknown = set(rules) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"constitution has unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}"
        )
    version = rules.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"constitution 'version' must be a positive integer (got {version!r})")
    raw_rules = rules.get("rules")
    if not isinstance(raw_rules, list):
        raise ConfigError("constitution needs a 'rules' list (it may be empty)")
    compiled: list[_Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = _compile_rule(index, raw)
        if rule.rule_id in seen:
            raise _rule_error(rule.rule_id, "the id is used by more than one rule")
        seen.add(rule.rule_id)
        compiled.append(rule)
    return tuple(compiled)


# ---------------------------------------------------------------------------------------------
# Walking the arguments
# ---------------------------------------------------------------------------------------------


def _json_scalar_size(value: Any) -> int:
    """UTF-8 length of a scalar as compact JSON."""
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if isinstance(value, str):
        return _json_str_size(value)
    if isinstance(value, int | float):
        return len(json.dumps(value))
    # Not JSON: count it as its string form, which is what a lenient serializer would write.
    return _json_str_size(str(value))


def _json_str_size(value: str) -> int:
    """UTF-8 length of a JSON string literal; skips json.dumps when nothing needs escaping."""
    if _NEEDS_JSON_ESCAPE.search(value) is None:
        size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
        return size + 2
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _json_key_size(key: Any) -> int:
    """UTF-8 length of a non-string mapping key as JSON writes it: quoted (1 -> "1")."""
    if key is None or isinstance(key, bool | int | float):
        return _json_scalar_size(key) + 2
    return _json_scalar_size(str(key))


def _walk(arguments: Any, want_size: bool) -> tuple[list[str], int]:
    """Collect every string (keys and values) in nested containers, and optionally the size.

    The size is the UTF-8 length of the compact JSON form (``separators=(",", ":")``,
    ``ensure_ascii=False``). An explicit stack, not recursion, so arbitrarily deep nesting
    cannot raise RecursionError; a container met twice (a cycle) is visited once.
    """
    strings: list[str] = []
    size = 0
    seen: set[int] = set()
    stack: list[Any] = [arguments]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings.append(item)
            if want_size:
                size += _json_scalar_size(item)
        elif isinstance(item, Mapping):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if want_size:
                # braces, one colon per member, commas between members
                size += 2 + len(item) + max(len(item) - 1, 0)
            for key, value in item.items():
                if isinstance(key, str):
                    strings.append(key)
                    if want_size:
                        size += _json_scalar_size(key)
                elif want_size:
                    size += _json_key_size(key)
                stack.append(value)
        elif isinstance(item, list | tuple | set | frozenset):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if want_size:
                size += 2 + max(len(item) - 1, 0)
            stack.extend(item)
        elif want_size:
            size += _json_scalar_size(item)
    return strings, size


def compact_json_size(arguments: Any) -> int:
    """UTF-8 length of ``arguments`` as compact JSON, computed without recursion.

    Equals ``len(json.dumps(arguments, separators=(",", ":"), ensure_ascii=False).encode())``
    for JSON data, but never raises RecursionError on deep nesting.
    """
    return _walk(arguments, want_size=True)[1]


# ---------------------------------------------------------------------------------------------
# The constitution
# ---------------------------------------------------------------------------------------------


def _redacted_event_type(event_type: str | None) -> str:
    """An event type safe to quote in a reason."""
    return "none" if event_type is None else repr(redact_secrets(event_type)[:120])


class Constitution:
    """A compiled constitution revision; build it with ``Constitution.from_rules``."""

    __slots__ = ("_deny", "_escalate", "_groups", "_needs_strings", "_needs_size", "_redactor")

    def __init__(self, rules: Sequence[_Rule]) -> None:
        """Compile validated rules; use ``from_rules`` to start from JSON."""
        self._deny = tuple(r for r in rules if r.effect == "deny")
        self._escalate = tuple(r for r in rules if r.effect == "escalate")
        # Evaluation order is precedence order: every deny rule before any escalate rule.
        groups: tuple[tuple[Effect, tuple[_Rule, ...]], ...] = (
            ("deny", self._deny),
            ("escalate", self._escalate),
        )
        self._groups = tuple(
            (effect, group, build_scanner(r.pattern for r in group if r.pattern is not None))
            for effect, group in groups
            if group
        )
        self._needs_strings = any(r.pattern is not None for r in rules)
        self._needs_size = any(r.max_bytes is not None for r in rules)
        self._redactor = redactor_with(r.pattern for r in self._deny if r.pattern is not None)

    @classmethod
    def from_rules(cls, rules: Mapping[str, Any]) -> Constitution:
        """Validate and compile a revision's ``rules`` JSON.

        Raises:
            ConfigError: naming the rule with a missing or duplicate id, an unknown effect or
                match key, or an invalid regex.
        """
        return cls(_compile_rules(rules))

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Ids of the deny rules then the escalate rules, each in their original order."""
        return tuple(r.rule_id for r in (*self._deny, *self._escalate))

    def evaluate(
        self,
        *,
        tool: str,
        event_type: str | None,
        arguments: Mapping[str, Any],
        serialized_size: int | None = None,
    ) -> Decision:
        """Screen one write: deny beats escalate beats allow; first rule in order names it.

        ``serialized_size`` is the byte size of the arguments as the caller serialized them;
        when omitted and a rule needs it, the compact-JSON size is computed here.
        """
        want_size = self._needs_size and serialized_size is None
        if self._needs_strings or want_size:
            strings, computed = _walk(arguments, want_size)
        else:
            strings, computed = [], 0
        size = computed if serialized_size is None else serialized_size
        for effect, group, scanner in self._groups:
            content_hit = scanner.any_match(strings)
            for rule in group:
                if rule.pattern is not None and not content_hit:
                    continue
                if rule.matches(tool, event_type, strings, size):
                    return Decision(effect, rule.rule_id, _reason(rule, tool, event_type, size))
        return ALLOW

    def redact(self, text: str) -> str:
        """``redact_secrets`` with this constitution's deny patterns added to the defaults."""
        return redact_secrets(text, self._redactor)


def _reason(rule: _Rule, tool: str, event_type: str | None, size: int) -> str:
    """A sentence naming the rule that matched and why, without quoting the matched content."""
    why: list[str] = []
    if rule.pattern is not None:
        why.append("the write's content matches its pattern")
    if rule.event_types is not None:
        why.append(f"the event type {_redacted_event_type(event_type)} is covered by it")
    if rule.max_bytes is not None:
        why.append(f"the arguments are {size} bytes, over its limit of {rule.max_bytes}")
    if rule.tools is not None:
        why.append(f"it applies to the tool {tool!r}")
    outcome = "Refused" if rule.effect == "deny" else "Held for an operator's decision"
    because = " and ".join(why)
    return f"{outcome} by constitution rule {rule.rule_id} ({rule.description}): {because}."


@cache
def default_constitution() -> Constitution:
    """The compiled ``DEFAULT_CONSTITUTION_RULES`` (revision 1 of every new workspace)."""
    return Constitution.from_rules(DEFAULT_CONSTITUTION_RULES)
