"""The governance defaults a new workspace is seeded with: counts, required values, the charter."""

from __future__ import annotations

import json
import re

import pytest

from isokron.errors import ConfigError
from isokron.governance.capabilities import (
    CAPABILITIES,
    KORA_BROADER,
    SEA,
    granted_capabilities,
)
from isokron.governance.charter import charter_sections_from_markdown
from isokron.governance.operations import TOOLS
from isokron.governance.policies import POLICIES as DEFAULT_POLICIES
from isokron.governance.seeds import (
    DEFAULT_CHARTER_MD,
    DEFAULT_CHARTER_SECTIONS,
    DEFAULT_CONSTITUTION_RULES,
)
from isokron.governance.vocabulary import ACTOR_KINDS

TOOL_CAPABILITIES = {name: tool.capability for name, tool in TOOLS.items()}

# ----------------------------------------------------------------------------------- actors


def test_default_actor_kinds_and_display_names() -> None:
    assert ACTOR_KINDS == {
        "kora": "Kora",
        "operator": "Workspace operator",
        "critic": "Critic",
        "oracle": "Oracle",
        "claude_pm": "Claude PM",
    }


# --------------------------------------------------------------------------------- policies


def test_exactly_31_policies_all_namespaced() -> None:
    assert len(DEFAULT_POLICIES) == 31
    for key, policy in DEFAULT_POLICIES.items():
        assert key == policy.key
        assert key.startswith("policy.")
        assert policy.description.strip()
        assert "\n" not in policy.description


def test_seed_001_policy_values() -> None:
    values = {key: p.value for key, p in DEFAULT_POLICIES.items()}
    assert values["policy.kora_disabled"] is False
    assert values["policy.kora_max_nonsecurity_overrides_per_24h"] == 5
    assert values["policy.kora_output_size_cap_pull"] == 500
    assert values["policy.kora_rate_limit_per_minute"] == 60
    assert values["policy.kora_context_assembler_token_ceiling.opus"] == 180000


def test_policies_the_gateway_reads() -> None:
    values = {key: p.value for key, p in DEFAULT_POLICIES.items()}
    assert values["policy.kora_max_payload_bytes"] == 65536
    assert values["policy.kora_max_scratchpad_content_bytes"] == 262144
    assert values["policy.kora_max_summary_bytes"] == 2048
    assert values["policy.kora_idempotency_ttl_hours"] == 24


def test_policy_values_are_json() -> None:
    for policy in DEFAULT_POLICIES.values():
        assert json.loads(json.dumps(policy.value)) == policy.value


# ----------------------------------------------------------------------------- capabilities


def test_49_capabilities_24_sea_25_kora_broader() -> None:
    assert len(CAPABILITIES) == 49
    assert sum(c.group == SEA for c in CAPABILITIES) == 24
    assert sum(c.group == KORA_BROADER for c in CAPABILITIES) == 25
    assert {c.group for c in CAPABILITIES} == {"sea", "kora_broader"}


def test_capability_names_unique_and_well_formed() -> None:
    names = [c.cap_name for c in CAPABILITIES]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"cap_[a-z0-9_]+", n) for n in names)
    assert all(c.description.strip() for c in CAPABILITIES)


def test_grants_name_only_known_actor_kinds() -> None:
    for cap in CAPABILITIES:
        assert cap.grants <= set(ACTOR_KINDS), cap.cap_name


def test_kora_is_granted_exactly_22() -> None:
    assert len(granted_capabilities("kora")) == 22
    assert sum("kora" in c.grants for c in CAPABILITIES) == 22


def test_operator_is_granted_everything() -> None:
    assert granted_capabilities("operator") == {c.cap_name for c in CAPABILITIES}


def test_unknown_actor_kind_is_granted_nothing() -> None:
    assert granted_capabilities("intruder") == frozenset()


def test_unbless_convention_is_operator_only() -> None:
    (cap,) = [c for c in CAPABILITIES if c.cap_name == "cap_unbless_convention"]
    assert cap.grants == {"operator"}


@pytest.mark.parametrize(
    "cap_name",
    [
        "cap_append_event",
        "cap_write_agent_scratchpad",
        "cap_read_agent_scratchpad",
        "cap_read_capability_row",
        "cap_propose_convention",
        "cap_propose_policy_change",
        "cap_read_escalation_queue",
        "cap_iso_node_create",
        "cap_iso_node_read",
        "cap_iso_node_supersede",
        "cap_iso_link_create",
        "cap_handoff_to_claude_pm",
    ],
)
def test_kora_granted(cap_name: str) -> None:
    assert cap_name in granted_capabilities("kora")


@pytest.mark.parametrize(
    "cap_name",
    [
        "cap_decide_proposal",
        "cap_decide_escalation",
        "cap_unbless_convention",
        "cap_bless_convention",
        "cap_set_policy",
        "cap_set_role_charter",
        "cap_issue_service_token",
        "cap_revoke_service_token",
        "cap_amend_constitution",
    ],
)
def test_operator_only(cap_name: str) -> None:
    (cap,) = [c for c in CAPABILITIES if c.cap_name == cap_name]
    assert cap.grants == {"operator"}


def test_other_agents_can_read_and_propose() -> None:
    for kind in ("critic", "oracle", "claude_pm"):
        granted = granted_capabilities(kind)
        assert {"cap_iso_node_read", "cap_read_role_charter", "cap_propose_convention"} <= granted
        assert "cap_decide_proposal" not in granted


def test_every_tool_maps_to_a_known_capability() -> None:
    names = {c.cap_name for c in CAPABILITIES}
    assert set(TOOL_CAPABILITIES.values()) <= names
    assert TOOL_CAPABILITIES["iso_node_search"] == "cap_iso_node_read"
    assert TOOL_CAPABILITIES["kora__decide_escalation"] == "cap_decide_escalation"


# -------------------------------------------------------------------------------- charter


def test_default_charter_round_trips() -> None:
    assert charter_sections_from_markdown(DEFAULT_CHARTER_MD) == DEFAULT_CHARTER_SECTIONS


def test_default_charter_sections_shape() -> None:
    sections = DEFAULT_CHARTER_SECTIONS
    assert sections["identity"].startswith("Kora is")
    assert len(sections["authority_can_do"]) >= 5
    assert len(sections["authority_cannot_do"]) >= 5
    # Wrapped bullets are joined into one item, so no item starts mid-sentence.
    assert all(item[0].isupper() for item in sections["authority_can_do"])
    assert any("unbless" in item for item in sections["authority_cannot_do"])
    assert 40 <= len(DEFAULT_CHARTER_MD.splitlines()) <= 80


def test_short_headings_any_case_and_extra_sections() -> None:
    md = """# Charter

## IDENTITY
Scout is a research agent.
It cites sources.

## Style
- not an authority item

## can do
* Read nodes
1. Create nodes
   across several lines

## Can't Do
- Decide proposals
"""
    sections = charter_sections_from_markdown(md)
    assert sections == {
        "identity": "Scout is a research agent. It cites sources.",
        "authority_can_do": ["Read nodes", "Create nodes across several lines"],
        "authority_cannot_do": ["Decide proposals"],
    }


def test_headings_inside_code_fences_do_not_count() -> None:
    md = "## Identity\nAn agent.\n```\n## Cannot do\n```\n## Can do\n- read\n"
    with pytest.raises(ConfigError, match="cannot do"):
        charter_sections_from_markdown(md)


@pytest.mark.parametrize(
    ("md", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("## Authority — can do\n- a\n## Authority — cannot do\n- b\n", "'## Identity'"),
        ("## Identity\nx\n## Authority — cannot do\n- b\n", "can do"),
        ("## Identity\nx\n## Authority — can do\n- a\n", "cannot do"),
        ("## Identity\n\n## Can do\n- a\n## Cannot do\n- b\n", "Identity.*empty"),
        ("## Identity\nx\n## Can do\nno bullets here\n## Cannot do\n- b\n", "no bullet"),
        ("## Identity\nx\n## Can do\n- a\n## Cannot do\n", "no bullet"),
        ("## Identity\nx\n## Identity\ny\n## Can do\n- a\n## Cannot do\n- b\n", "two"),
    ],
)
def test_invalid_charters_raise_config_error(md: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        charter_sections_from_markdown(md)


# --------------------------------------------------------------------------- constitution


def test_default_constitution_is_json() -> None:
    assert json.loads(json.dumps(DEFAULT_CONSTITUTION_RULES)) == DEFAULT_CONSTITUTION_RULES
    assert DEFAULT_CONSTITUTION_RULES["version"] == 1
    effects = {r["effect"] for r in DEFAULT_CONSTITUTION_RULES["rules"]}
    assert effects == {"deny", "escalate"}
