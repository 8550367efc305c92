"""The §1–§6 prompt block, the recall block, and the write helpers (pure functions)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from isokron.provider.prompt_block import (
    NOT_SEEDED,
    PROMPT_POLICY_KEYS,
    SOURCE_OF_TRUTH_LABEL,
    recall_query,
    render_prompt_block,
    render_recall,
)
from isokron.provider.writes import (
    SUMMARY_MAX_BYTES,
    TRUNCATED_MARKER,
    kora_actions,
    looks_like_kora_action,
    summarize_for_scratchpad,
    truncate_utf8,
)
from isokron.substrate.models import (
    CapabilityRow,
    IsoNode,
    PolicyEntry,
    RecentChainEvent,
    RoleCharter,
)

CHARTER = RoleCharter(
    workspace_id="acme",
    charter_id=uuid.uuid4(),
    version=3,
    content_md="# Kora",
    identity="Kora keeps the workspace's memory honest.",
    authority_can_do=("Create iso nodes.", "Write scratchpad entries."),
    authority_cannot_do=("Decide proposals.",),
    content_hash="0" * 64,
)
POLICIES = (
    PolicyEntry("policy.kora_disabled", False),
    PolicyEntry("policy.kora_rate_limit_per_minute", 60),
    PolicyEntry("policy.kora_output_size_cap_pull", 500),
    PolicyEntry("policy.kora_context_assembler_token_ceiling.opus", 180000),
    PolicyEntry("policy.kora_prompt_recent_activity_count", 2),
)
CAPS = CapabilityRow("kora", {"cap_b": True, "cap_a": True, "cap_c": False})
AT = datetime(2026, 5, 20, 10, 0, tzinfo=UTC)
EVENTS = tuple(
    RecentChainEvent(uuid.uuid4(), seq, f"kora.test.e{seq}", AT, "{}") for seq in (9, 8, 7)
)


def block(**overrides: object) -> str:
    values: dict[str, object] = {
        "workspace_id": "acme",
        "charter": CHARTER,
        "identity_error": None,
        "policies": POLICIES,
        "capabilities": CAPS,
        "recent_events": EVENTS,
    }
    values.update(overrides)
    return render_prompt_block(**values)  # type: ignore[arg-type]


def test_sections_in_order_with_the_label_last() -> None:
    text = block()
    heads = [
        "§1 Identity (Kora Role Charter v3)",
        "§2 You CAN:",
        "§3 You CANNOT:",
        "§4 Active policy values",
        "§5 Granted capabilities (2 of 3):",
        "§6 Recent kora.* activity",
    ]
    positions = [text.index(h) for h in heads]
    assert positions == sorted(positions)
    assert text.endswith(SOURCE_OF_TRUTH_LABEL)
    assert text.count(SOURCE_OF_TRUTH_LABEL) == 1
    assert "Kora keeps the workspace's memory honest." in text
    assert "  - Create iso nodes.\n  - Write scratchpad entries." in text
    assert "  - cap_a\n  - cap_b" in text and "cap_c" not in text


def test_label_is_verbatim() -> None:
    assert SOURCE_OF_TRUTH_LABEL == (
        "This identity block was assembled by IsoKronMemoryProvider on session start.\n"
        "The substrate is the source of truth; if anything below conflicts with a\n"
        "fresh substrate query, the substrate query wins."
    )


def test_policy_values_render_as_json_and_missing_keys_as_not_seeded() -> None:
    text = block()
    assert "  - policy.kora_disabled = false" in text
    assert "  - policy.kora_rate_limit_per_minute = 60" in text
    assert f"  - policy.kora_max_nonsecurity_overrides_per_24h = {NOT_SEEDED}" in text
    assert [
        line.split(" = ")[0].strip(" -") for line in text.splitlines() if " = " in line
    ] == list(PROMPT_POLICY_KEYS)


def test_activity_lists_as_many_events_as_the_policy_says() -> None:
    text = block()
    assert "§6 Recent kora.* activity (last 2):" in text
    assert "  - 2026-05-20T10:00:00Z kora.test.e9 (seq 9)" in text
    assert "kora.test.e8" in text and "kora.test.e7" not in text
    assert "(no kora.* events yet)" in block(recent_events=())
    assert "(last 5)" in block(policies=())  # default without the policy


def test_unverified_identity_withholds_the_charter_and_says_why() -> None:
    text = block(charter=None, identity_error="the charter does not match its SHA-256")
    assert text.startswith("§1 Identity — NOT VERIFIED")
    assert "does not match its SHA-256" in text
    assert "Create iso nodes." not in text
    assert text.count("(withheld: the identity is not verified)") == 2
    assert text.endswith(SOURCE_OF_TRUTH_LABEL)


def test_unreadable_values_say_unavailable() -> None:
    text = block(charter=None, policies=None, capabilities=None, recent_events=None)
    assert "the substrate could not be reached" in text
    assert text.count("<unavailable>") >= 3


def test_recall_block() -> None:
    node = IsoNode(
        uuid.uuid4(),
        "decision",
        "Use RLS",
        "x " * 400,
        {},
        "active",
        None,
        uuid.uuid4(),
        AT,
        uuid.uuid4(),
    )
    text = render_recall([node])
    assert text.startswith("IsoKron knowledge graph") and "[decision] Use RLS" in text
    assert text.endswith("…")
    assert render_recall([]) == ""
    assert (
        recall_query("What about tenant isolation in 2026?")
        == "what or about or tenant or isolation"
    )
    assert recall_query("a b c") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I used cap_iso_node_create here", True),
        ("cap_append_event.", True),
        ("(cap_x1)", True),
        ("supercap_iso_node_create", False),
        ("cap_ alone", False),
        ("CAP_UPPER", False),
        ("no capability", False),
        ("", False),
    ],
)
def test_kora_action_heuristic_is_word_bounded(text: str, expected: bool) -> None:
    assert looks_like_kora_action(text) is expected


def test_kora_actions_are_distinct_in_order() -> None:
    assert kora_actions("cap_b then cap_a then cap_b") == ["cap_b", "cap_a"]


def test_summary_is_capped_at_2kb_with_marker_on_a_character_boundary() -> None:
    short = "short summary"
    assert summarize_for_scratchpad(short) == short
    long = "é" * 3000  # 2 bytes each
    summary = summarize_for_scratchpad(long)
    assert summary.endswith(TRUNCATED_MARKER)
    assert len(summary.encode("utf-8")) <= SUMMARY_MAX_BYTES
    assert truncate_utf8("abc", 3) == "abc"
