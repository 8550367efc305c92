"""The constitution evaluator: deterministic allow / deny / escalate over a write's arguments.

Secret-shaped test values are assembled at runtime from pieces, so that this file never
contains a token-shaped literal itself (secret scanners would flag it).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from isokron.errors import ConfigError
from isokron.governance.redaction import redact_secrets
from isokron.governance.rules import (
    ALLOW,
    Constitution,
    Decision,
    compact_json_size,
    default_constitution,
)
from isokron.governance.seeds import DEFAULT_CONSTITUTION_RULES

SECRETS: dict[str, str] = {
    "deny-secret-wsk": "wsk_" + "A1b2" * 5,
    "deny-secret-openai": "sk" + "-" + "proj_" + "Xy9-" * 6,
    "deny-secret-slack": "xo" + "xb-" + "123456789012" + "-" + "1234567890123" + "-" + "AbCd" * 6,
    "deny-secret-aws": "AK" + "IA" + "ABCDEFGH2345WXYZ",
    "deny-secret-pem": "-----BEGIN " + "RSA PRIVATE" + " KEY-----",
    "deny-secret-github": "gh" + "p_" + "a1B2c3" * 6,
}


def _eval(
    constitution: Constitution,
    arguments: dict[str, Any],
    *,
    tool: str = "kora__append_event",
    event_type: str | None = "kora.note.recorded",
    size: int | None = None,
) -> Decision:
    return constitution.evaluate(
        tool=tool, event_type=event_type, arguments=arguments, serialized_size=size
    )


@pytest.fixture(scope="module")
def default() -> Constitution:
    return Constitution.from_rules(DEFAULT_CONSTITUTION_RULES)


# ------------------------------------------------------------------------------ the defaults


@pytest.mark.parametrize("rule_id", sorted(SECRETS))
def test_each_secret_shape_is_denied(default: Constitution, rule_id: str) -> None:
    secret = SECRETS[rule_id]
    decision = _eval(default, {"payload": {"notes": ["ok", f"here it is: {secret} thanks"]}})
    assert decision.effect == "deny"
    assert decision.rule_id == rule_id
    assert secret not in decision.reason
    assert rule_id in decision.reason


@pytest.mark.parametrize("rule_id", sorted(SECRETS))
def test_secret_in_a_key_is_denied(default: Constitution, rule_id: str) -> None:
    decision = _eval(default, {"payload": {SECRETS[rule_id]: 1}})
    assert decision.rule_id == rule_id


@pytest.mark.parametrize(
    "text",
    [
        "wsk_short",
        "the wsk_* token valid check passed",
        "Token rotation — wsk_*",
        "ask-questions-about-the-quarterly-plan",
        "risk-assessment-for-the-whole-team",
        "xoxb-token-here",
        "AKIA",
        "XAKIA" + "ABCDEFGH2345WXYZ",
        "-----BEGIN PUBLIC KEY-----",
        "ghp_" + "short",
        "we should drop everything and celebrate",
        "undelete all the files",
    ],
)
def test_near_misses_are_allowed(default: Constitution, text: str) -> None:
    assert _eval(default, {"summary": text}) == ALLOW


def test_reason_names_rule_and_description(default: Constitution) -> None:
    decision = _eval(default, {"content": SECRETS["deny-secret-wsk"]})
    assert "deny-secret-wsk" in decision.reason
    assert "workspace service key" in decision.reason


@pytest.mark.parametrize("event_type", ["governance.policy.set", "gateway.denied"])
def test_governance_and_gateway_events_are_denied(default: Constitution, event_type: str) -> None:
    decision = _eval(default, {"payload": {}}, event_type=event_type)
    assert decision.effect == "deny"
    assert decision.rule_id == "deny-governance-events"


def test_similar_event_types_are_allowed(default: Constitution) -> None:
    for event_type in ("kora.governance.note", "governance", "Governance.x", None):
        assert _eval(default, {}, event_type=event_type).allowed


def test_secret_in_event_type_is_not_echoed(default: Constitution) -> None:
    secret = SECRETS["deny-secret-wsk"]
    decision = _eval(default, {}, event_type="governance." + secret)
    assert decision.effect == "deny"
    assert secret not in decision.reason


def test_bulk_destruction_escalates(default: Constitution) -> None:
    decision = _eval(default, {"summary": "Please DROP  the whole table now"})
    assert decision.effect == "escalate"
    assert decision.rule_id == "escalate-bulk-destruction"
    assert not decision.allowed


def test_policy_override_event_escalates(default: Constitution) -> None:
    decision = _eval(default, {}, event_type="kora.policy.override.requested")
    assert (decision.effect, decision.rule_id) == ("escalate", "escalate-policy-override")
    assert decision.reason.startswith("Held for an operator's decision")


def test_deny_beats_escalate(default: Constitution) -> None:
    arguments = {"a": "delete all the notes", "b": SECRETS["deny-secret-github"]}
    decision = _eval(default, arguments, event_type="kora.policy.override")
    assert decision.effect == "deny"
    assert decision.rule_id == "deny-secret-github"


def test_default_size_limit(default: Constitution) -> None:
    assert _eval(default, {"x": "y"}, size=1048576).allowed
    decision = _eval(default, {"x": "y"}, size=1048577)
    assert decision.rule_id == "deny-oversized-write"
    assert "1048577" in decision.reason


def test_2000_deep_nesting_does_not_crash(default: Constitution) -> None:
    root: dict[str, Any] = {}
    node = root
    for _ in range(2000):
        child: dict[str, Any] = {}
        node["x"] = [child]
        node = child
    node["leaf"] = "harmless"
    assert _eval(default, root) == ALLOW
    node["leaf"] = SECRETS["deny-secret-aws"]
    assert _eval(default, root).rule_id == "deny-secret-aws"


def test_default_constitution_is_cached() -> None:
    assert default_constitution() is default_constitution()
    assert default_constitution().rule_ids[0] == "deny-secret-wsk"


def test_evaluation_is_deterministic(default: Constitution) -> None:
    arguments = {"a": ["drop all", {"b": SECRETS["deny-secret-pem"]}]}
    decisions = {_eval(default, copy.deepcopy(arguments)) for _ in range(5)}
    assert len(decisions) == 1


# ----------------------------------------------------------------------------- custom rules


def _rules(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "rules": list(rules)}


def test_first_rule_in_order_wins_within_an_effect() -> None:
    c = Constitution.from_rules(
        _rules(
            {"id": "first", "effect": "deny", "match": {"content_pattern": "beta"}},
            {"id": "second", "effect": "deny", "match": {"content_pattern": "alpha"}},
        )
    )
    # "alpha" appears first in the text, but rule order decides.
    assert _eval(c, {"t": "alpha then beta"}).rule_id == "first"
    assert _eval(c, {"t": "alpha only"}).rule_id == "second"


def test_escalate_listed_before_deny_still_loses() -> None:
    c = Constitution.from_rules(
        _rules(
            {"id": "esc", "effect": "escalate", "match": {"content_pattern": "x"}},
            {"id": "den", "effect": "deny", "match": {"content_pattern": "x"}},
        )
    )
    assert _eval(c, {"t": "x"}).rule_id == "den"


def test_max_bytes_computed_when_size_not_given() -> None:
    c = Constitution.from_rules(
        _rules({"id": "small", "effect": "deny", "match": {"max_bytes": 20}})
    )
    assert _eval(c, {"t": "a" * 5}).allowed
    decision = _eval(c, {"t": "a" * 50})
    assert decision.rule_id == "small"
    # A caller-supplied size takes precedence over the computed one.
    assert _eval(c, {"t": "a" * 50}, size=10).allowed


def test_tool_condition_combines_with_content() -> None:
    c = Constitution.from_rules(
        _rules(
            {
                "id": "no-urls-in-nodes",
                "effect": "deny",
                "description": "nodes cite sources by id",
                "match": {"content_pattern": r"https?://", "tool": ["iso_node_create"]},
            }
        )
    )
    arguments = {"body": "see https://example.org"}
    assert _eval(c, arguments, tool="iso_node_create").rule_id == "no-urls-in-nodes"
    assert _eval(c, arguments, tool="kora__write_agent_scratchpad").allowed
    assert _eval(c, {"body": "no link"}, tool="iso_node_create").allowed


def test_tool_only_rule_and_globs() -> None:
    c = Constitution.from_rules(
        _rules({"id": "freeze-links", "effect": "escalate", "match": {"tool": "iso_link_*"}})
    )
    assert _eval(c, {}, tool="iso_link_create").effect == "escalate"
    assert _eval(c, {}, tool="iso_node_create").allowed


def test_event_type_condition_with_content() -> None:
    c = Constitution.from_rules(
        _rules(
            {
                "id": "handoff-needs-no-pii",
                "effect": "deny",
                "match": {"event_type": ["kora.handoff.*"], "content_pattern": r"\bSSN\b"},
            }
        )
    )
    assert _eval(c, {"t": "SSN"}, event_type="kora.handoff.to_claude_pm").effect == "deny"
    assert _eval(c, {"t": "SSN"}, event_type="kora.note").allowed
    assert _eval(c, {"t": "SSN"}, event_type=None).allowed


def test_patterns_with_different_flags_and_groups() -> None:
    c = Constitution.from_rules(
        _rules(
            {"id": "ci", "effect": "deny", "match": {"content_pattern": "(?i)secret sauce"}},
            {"id": "cs", "effect": "deny", "match": {"content_pattern": "Recipe"}},
            {"id": "named", "effect": "deny", "match": {"content_pattern": "(?P<w>zz)top"}},
            {"id": "named2", "effect": "deny", "match": {"content_pattern": "(?P<w>yy)top"}},
            {"id": "backref", "effect": "deny", "match": {"content_pattern": r"(ab)\1\1"}},
            {"id": "verbose", "effect": "deny", "match": {"content_pattern": "(?x) q q # c"}},
        )
    )
    assert _eval(c, {"t": "SECRET SAUCE"}).rule_id == "ci"
    assert _eval(c, {"t": "recipe"}).allowed
    assert _eval(c, {"t": "Recipe"}).rule_id == "cs"
    assert _eval(c, {"t": "yytop"}).rule_id == "named2"
    assert _eval(c, {"t": "ababab"}).rule_id == "backref"
    assert _eval(c, {"t": "ab"}).allowed
    assert _eval(c, {"t": "qq"}).rule_id == "verbose"


def test_empty_rules_allow_everything() -> None:
    c = Constitution.from_rules({"version": 1, "rules": []})
    assert _eval(c, {"t": SECRETS["deny-secret-wsk"]}) == ALLOW


# --------------------------------------------------------------------------- invalid rules


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"id": "bad-re", "effect": "deny", "match": {"content_pattern": "(unclosed"}}, "bad-re"),
        ({"id": "bad-effect", "effect": "allow", "match": {"tool": ["x"]}}, "bad-effect"),
        ({"id": "bad-key", "effect": "deny", "match": {"contents": "x"}}, "bad-key"),
        ({"id": "bad-top", "effect": "deny", "match": {"tool": ["x"]}, "when": 1}, "bad-top"),
        ({"id": "no-match", "effect": "deny", "match": {}}, "no-match"),
        ({"id": "bad-size", "effect": "deny", "match": {"max_bytes": "big"}}, "bad-size"),
        ({"id": "bool-size", "effect": "deny", "match": {"max_bytes": True}}, "bool-size"),
        ({"id": "bad-glob", "effect": "deny", "match": {"event_type": []}}, "bad-glob"),
        ({"id": "empty-re", "effect": "deny", "match": {"content_pattern": "a*"}}, "empty-re"),
        ({"effect": "deny", "match": {"tool": ["x"]}}, r"#1 needs an 'id'"),
        ({"id": "", "effect": "deny", "match": {"tool": ["x"]}}, r"#1 needs an 'id'"),
    ],
)
def test_invalid_rule_raises_config_error_naming_it(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Constitution.from_rules(_rules(rule))


def test_duplicate_ids_are_rejected() -> None:
    rule = {"id": "twice", "effect": "deny", "match": {"tool": ["x"]}}
    with pytest.raises(ConfigError, match="twice"):
        Constitution.from_rules(_rules(rule, dict(rule)))


@pytest.mark.parametrize(
    "document",
    [[], {"rules": "nope"}, {"version": 0, "rules": []}, {"rules": [], "extra": 1}, {"rules": [1]}],
)
def test_malformed_documents_are_rejected(document: Any) -> None:
    with pytest.raises(ConfigError):
        Constitution.from_rules(document)


# ------------------------------------------------------------------------------- redaction


@pytest.mark.parametrize("rule_id", sorted(SECRETS))
def test_redact_secrets_removes_whole_tokens(rule_id: str) -> None:
    secret = SECRETS[rule_id]
    redacted = redact_secrets(f"auth failed for {secret}; retrying")
    assert secret not in redacted
    assert "[REDACTED]" in redacted
    assert redacted.startswith("auth failed for ")
    assert redacted.endswith("; retrying")


def test_redaction_keeps_no_token_prefix() -> None:
    secret = SECRETS["deny-secret-wsk"]
    assert redact_secrets(secret) == "[REDACTED]"


def test_redact_whole_pem_block() -> None:
    block = SECRETS["deny-secret-pem"] + "\nMIIEow\nIBAAK\n" + "-----END RSA PRIVATE KEY-----"
    assert redact_secrets(f"key:\n{block}\nend") == "key:\n[REDACTED]\nend"


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "the wsk_* token valid; rotate wsk_short keys"
    assert redact_secrets(text) == text


def test_redact_with_constitution_adds_its_deny_patterns() -> None:
    c = Constitution.from_rules(
        _rules({"id": "internal", "effect": "deny", "match": {"content_pattern": r"INT-\d{6}"}})
    )
    text = "ids INT-123456 and " + SECRETS["deny-secret-wsk"]
    assert c.redact(text) == "ids [REDACTED] and [REDACTED]"
    assert redact_secrets(text) == "ids INT-123456 and [REDACTED]"


# ------------------------------------------------------------------------------------ size


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True, False], "b": {"c": 'quote " and \\ and \n', "é": "€😀"}},
        [],
        {},
        [[[]]],
        {"n": -3e10, "k": [{"x": ""}]},
    ],
)
def test_compact_json_size_matches_json_dumps(value: Any) -> None:
    expected = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    assert compact_json_size(value) == expected


def test_compact_json_size_of_deep_nesting() -> None:
    value: list[Any] = []
    node = value
    for _ in range(5000):
        child: list[Any] = []
        node.append(child)
        node = child
    assert compact_json_size(value) == 2 * 5001
