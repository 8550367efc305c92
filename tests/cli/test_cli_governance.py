"""Operator commands against a real substrate: workspaces, charter, policies, capabilities,
tokens, proposals and escalations. Each change is chained like any write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from cli_support import TOKEN_RE, Cli, CliWorkspace, assert_clean_error

from isokron.governance import vocabulary as defaults


def _events(sql: Callable[..., Any], ws: CliWorkspace) -> int:
    return sql(
        "SELECT last_seq FROM hivex_foundation.chain_head WHERE tenant_id = %s::uuid",
        (ws.tenant_id,),
    )


# ---------------------------------------------------------------------------- workspace
def test_workspace_create_and_list(cli: Cli, make_cli_workspace: Callable) -> None:
    ws = make_cli_workspace("ws")
    assert set(ws.actors) == set(defaults.ACTOR_KINDS)
    listed = {w["workspace_id"]: w for w in cli.json("workspace", "list")}
    assert listed[ws.workspace_id]["events"] == 5
    assert listed[ws.workspace_id]["name"] == "CLI ws"
    text = cli.ok("workspace", "list").stdout
    assert ws.workspace_id in text


def test_workspace_create_prints_for_a_person(cli: Cli) -> None:
    ws_id = f"human-{uuid4().hex[:8]}"
    out = cli.ok("workspace", "create", ws_id).stdout
    assert f"created workspace {ws_id}" in out
    for kind in defaults.ACTOR_KINDS:
        assert f"actor {kind}" in out
    assert_clean_error(cli("workspace", "create", ws_id), "already exists")


def test_workspace_create_with_a_charter_file(cli: Cli, tmp_path: Path) -> None:
    charter = tmp_path / "charter.md"
    charter.write_text(_charter("Custom Kora"), encoding="utf-8")
    ws_id = f"charter-{uuid4().hex[:8]}"
    cli.ok("workspace", "create", ws_id, "--charter", str(charter))
    shown = cli.json("charter", "show", ws_id)
    assert shown["version"] == 1 and "Custom Kora" in shown["identity"]


# ------------------------------------------------------------------------------ charter
def _charter(identity: str) -> str:
    return (
        f"# Role charter\n\n## Identity\n\n{identity} keeps the workspace's memory.\n\n"
        "## Authority — can do\n\n- write scratchpad entries\n- create iso nodes\n\n"
        "## Authority — cannot do\n\n- change its own charter\n"
    )


def test_charter_set_and_show(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path, sql: Callable[..., Any]
) -> None:
    ws = cli_workspace
    before = _events(sql, ws)
    charter = tmp_path / "charter.md"
    charter.write_text(_charter("Kora Mark II"), encoding="utf-8")

    out = cli.ok("charter", "set", ws.workspace_id, str(charter)).stdout
    assert "charter v2 active" in out
    assert _events(sql, ws) == before + 1

    shown = cli.json("charter", "show", ws.workspace_id)
    assert shown["version"] == 2
    assert shown["identity"] == "Kora Mark II keeps the workspace's memory."
    assert shown["authority_can_do"] == ["write scratchpad entries", "create iso nodes"]
    assert shown["authority_cannot_do"] == ["change its own charter"]
    text = cli.ok("charter", "show", ws.workspace_id).stdout
    assert "verified" in text and "Kora Mark II" in text


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("# just a title\n\nno sections here\n", "no '## Identity' section"),
        ("", "empty"),
        (
            "## Identity\n\nKora.\n\n## Authority — can do\n\n## Authority — cannot do\n\n- x\n",
            "no bullet points",
        ),
    ],
    ids=["no-sections", "empty", "empty-list"],
)
def test_an_invalid_charter_file_is_a_clean_error(
    cli: Cli,
    cli_workspace: CliWorkspace,
    tmp_path: Path,
    sql: Callable[..., Any],
    content: str,
    fragment: str,
) -> None:
    before = _events(sql, cli_workspace)
    bad = tmp_path / "bad.md"
    bad.write_text(content, encoding="utf-8")
    assert_clean_error(cli("charter", "set", cli_workspace.workspace_id, str(bad)), fragment)
    assert _events(sql, cli_workspace) == before
    assert cli.json("charter", "show", cli_workspace.workspace_id)["version"] == 1


def test_charter_show_fails_closed_on_a_tampered_charter(
    cli: Cli, cli_workspace: CliWorkspace, sql: Callable[..., Any]
) -> None:
    sql(
        "UPDATE public.kora_role_charter SET content_md = content_md || ' obey' "
        "WHERE workspace_id = %s",
        (cli_workspace.workspace_id,),
    )
    result = cli("charter", "show", cli_workspace.workspace_id)
    assert_clean_error(result, "does not match its SHA-256")
    assert "obey" not in result.stdout  # unverified text is never shown


# ------------------------------------------------------------------------------- policy
def test_policy_set_and_list(
    cli: Cli, cli_workspace: CliWorkspace, sql: Callable[..., Any]
) -> None:
    ws = cli_workspace
    policies = cli.json("policy", "list", ws.workspace_id)
    assert len(policies) == 31 and policies["policy.kora_rate_limit_per_minute"] == 60
    before = _events(sql, ws)

    out = cli.ok("policy", "set", ws.workspace_id, "policy.kora_rate_limit_per_minute", "30")
    assert "policy.kora_rate_limit_per_minute = 30" in out.stdout
    cli.ok("policy", "set", ws.workspace_id, "policy.kora_note", '"free text"')

    assert _events(sql, ws) == before + 2
    policies = cli.json("policy", "list", ws.workspace_id)
    assert policies["policy.kora_rate_limit_per_minute"] == 30
    assert policies["policy.kora_note"] == "free text"
    assert "policy.kora_note" in cli.ok("policy", "list", ws.workspace_id).stdout


@pytest.mark.parametrize("value", ["not json", "{broken", "'single'"])
def test_policy_set_with_a_bad_json_value_is_a_clean_error(
    cli: Cli, cli_workspace: CliWorkspace, sql: Callable[..., Any], value: str
) -> None:
    before = _events(sql, cli_workspace)
    result = cli("policy", "set", cli_workspace.workspace_id, "policy.kora_disabled", value)
    assert_clean_error(result, "is not JSON")
    assert _events(sql, cli_workspace) == before


def test_policy_set_with_a_bad_key_is_a_clean_error(cli: Cli, cli_workspace: CliWorkspace) -> None:
    result = cli("policy", "set", cli_workspace.workspace_id, "Not A Key", "1")
    assert_clean_error(result, "policy keys look like policy.some_name", "(invalid_argument)")


# --------------------------------------------------------------------------- capability
def test_capability_list_and_set(
    cli: Cli, cli_workspace: CliWorkspace, sql: Callable[..., Any]
) -> None:
    ws = cli_workspace
    row = cli.json("capability", "list", ws.workspace_id)
    assert row["actor_kind"] == "kora"
    assert len(row["capabilities"]) == 49
    assert sum(row["capabilities"].values()) == 22
    assert (
        "kora: 22 of 49 capabilities granted"
        in cli.ok("capability", "list", ws.workspace_id).stdout
    )
    before = _events(sql, ws)

    cli.ok("capability", "set", ws.workspace_id, "cap_iso_node_create", "kora", "--deny")
    cli.ok("capability", "set", ws.workspace_id, "cap_decide_proposal", "critic", "--grant")

    assert _events(sql, ws) == before + 2
    assert (
        cli.json("capability", "list", ws.workspace_id)["capabilities"]["cap_iso_node_create"]
        is False
    )
    critic = cli.json("capability", "list", ws.workspace_id, "--actor-kind", "critic")
    assert critic["capabilities"]["cap_decide_proposal"] is True


# -------------------------------------------------------------------------------- token
def test_token_issue_list_revoke(
    cli: Cli, cli_workspace: CliWorkspace, sql: Callable[..., Any]
) -> None:
    ws = cli_workspace
    issued = cli.ok("token", "issue", ws.workspace_id, "--label", "laptop")
    tokens = TOKEN_RE.findall(issued.stdout)
    assert len(tokens) == 1  # printed exactly once
    token = tokens[0]
    assert "not shown again" in issued.stdout
    assert token not in issued.stderr

    listed = cli.json("token", "list", ws.workspace_id)
    table = cli.ok("token", "list", ws.workspace_id).stdout
    for shown in (str(listed), table):
        assert token not in shown and token[12:] not in shown  # never the secret
    assert [(t["token_prefix"], t["label"], t["status"], t["actor_kind"]) for t in listed] == [
        (token[:12], "laptop", "active", "kora")
    ]
    assert (
        sql(
            "SELECT count(*) FROM isokron.service_tokens WHERE token_hash = sha256(%s::bytea)",
            (token.encode(),),
        )
        == 1
    )

    second = cli.json("token", "issue", ws.workspace_id, "--actor-kind", "oracle")
    assert TOKEN_RE.fullmatch(second["token"])

    out = cli.ok("token", "revoke", ws.workspace_id, token[:12]).stdout
    assert f"revoked {token[:12]}" in out
    cli.ok("token", "revoke", ws.workspace_id, second["token_id"])
    statuses = {t["token_prefix"]: t["status"] for t in cli.json("token", "list", ws.workspace_id)}
    assert statuses == {token[:12]: "revoked", second["token_prefix"]: "revoked"}
    assert_clean_error(cli("token", "revoke", ws.workspace_id, token), "already revoked")


def test_token_issue_for_a_missing_actor_kind_is_a_clean_error(
    cli: Cli, cli_workspace: CliWorkspace
) -> None:
    result = cli("token", "issue", cli_workspace.workspace_id, "--actor-kind", "ghost")
    assert_clean_error(result, "no active 'ghost' actor")


# ------------------------------------------------------------------ proposals, escalations
def test_proposal_list_and_decide(
    cli: Cli, cli_workspace: CliWorkspace, agent_write: Callable[..., dict]
) -> None:
    ws = cli_workspace
    convention = agent_write(ws, "propose_convention", {"title": "Name things", "body": "b"})
    change = agent_write(
        ws,
        "propose_policy_change",
        {"policy_key": "policy.kora_rate_limit_per_minute", "proposed_value": 12},
    )
    pending = cli.json("proposal", "list", ws.workspace_id)
    assert {(p["proposal_kind"], p["proposal_id"]) for p in pending} == {
        ("convention", convention["proposal_id"]),
        ("policy_change", change["proposal_id"]),
    }
    assert "Name things" in cli.ok("proposal", "list", ws.workspace_id).stdout

    cli.ok("proposal", "decide", ws.workspace_id, convention["proposal_id"], "reject")
    out = cli.ok(
        "proposal",
        "decide",
        ws.workspace_id,
        change["proposal_id"],
        "accept",
        "--kind",
        "policy_change",
        "--note",
        "fine",
    ).stdout
    assert "accepted" in out

    assert cli.json("proposal", "list", ws.workspace_id) == []
    decided = {
        p["proposal_id"]: p["status"]
        for p in cli.json("proposal", "list", ws.workspace_id, "--status", "all")
    }
    assert decided == {convention["proposal_id"]: "rejected", change["proposal_id"]: "accepted"}
    assert cli.json("policy", "list", ws.workspace_id)["policy.kora_rate_limit_per_minute"] == 12

    assert_clean_error(
        cli("proposal", "decide", ws.workspace_id, change["proposal_id"], "maybe"),
        "accept or reject",
    )
    assert_clean_error(
        cli(
            "proposal",
            "decide",
            ws.workspace_id,
            change["proposal_id"],
            "accept",
            "--kind",
            "policy_change",
        ),
        "already accepted",
    )


def test_escalation_list_and_decide(
    cli: Cli, cli_workspace: CliWorkspace, agent_write: Callable[..., dict], sql: Callable
) -> None:
    ws = cli_workspace
    held = agent_write(
        ws,
        "raise_escalation",
        {
            "tool": "iso_node_create",
            "reason": "needs a person",
            "request": {
                "op": "iso_node_create",
                "args": {"node_type": "decision", "title": "approved by a person"},
            },
        },
    )
    other = agent_write(ws, "raise_escalation", {"tool": "t", "reason": "second"})
    queue = cli.json("escalation", "list", ws.workspace_id)
    assert [e["escalation_id"] for e in queue] == [held["escalation_id"], other["escalation_id"]]
    assert "needs a person" in cli.ok("escalation", "list", ws.workspace_id).stdout

    decided = cli.json("escalation", "decide", ws.workspace_id, held["escalation_id"], "approve")
    assert decided["status"] == "approved"
    assert (
        sql(
            "SELECT title FROM kronicle.iso_nodes WHERE workspace_id = %s AND node_id = %s::uuid",
            (ws.workspace_id, decided["applied"]["node_id"]),
        )
        == "approved by a person"
    )
    cli.ok("escalation", "decide", ws.workspace_id, other["escalation_id"], "reject")

    assert cli.json("escalation", "list", ws.workspace_id) == []
    every = cli.json("escalation", "list", ws.workspace_id, "--status", "all")
    assert sorted(e["status"] for e in every) == ["approved", "rejected"]
    assert_clean_error(
        cli("escalation", "decide", ws.workspace_id, other["escalation_id"], "yes"),
        "approve or reject",
    )


def test_escalation_list_and_show_print_the_held_operation_with_secrets_redacted(
    cli: Cli, cli_workspace: CliWorkspace, agent_write: Callable[..., dict]
) -> None:
    ws = cli_workspace
    secret = "wsk_" + "A1b2C3d4E5" * 4
    held = agent_write(
        ws,
        "raise_escalation",
        {
            "tool": "iso_node_create",
            "reason": "bulk deletion wording",
            "request": {
                "op": "iso_node_create",
                "args": {"node_type": "fact", "title": "delete all notes", "content": secret},
            },
        },
        kind="critic",
    )
    listed = cli.ok("escalation", "list", ws.workspace_id).stdout
    assert "iso_node_create" in listed and "critic" in listed and secret not in listed
    shown = cli.ok("escalation", "show", ws.workspace_id, held["escalation_id"]).stdout
    assert "iso_node_create" in shown and "delete all notes" in shown
    assert secret not in shown and "[REDACTED]" in shown
    data = cli.json("escalation", "show", ws.workspace_id, held["escalation_id"])
    assert data["raised_by"] == "critic"
    assert data["held"] == {
        "op": "iso_node_create",
        "args": {"node_type": "fact", "title": "delete all notes", "content": "[REDACTED]"},
    }
    # critic lacks cap_iso_node_create: approving is refused unless the operator overrides.
    refused = cli("escalation", "decide", ws.workspace_id, held["escalation_id"], "approve")
    assert_clean_error(refused, "cap_iso_node_create")
    decided = cli.json(
        "escalation", "decide", ws.workspace_id, held["escalation_id"], "approve", "--override"
    )
    assert decided["override"] is True and decided["applied"]["node_id"]
    assert_clean_error(
        cli("escalation", "show", ws.workspace_id, "not-a-uuid"), "is not an escalation id"
    )
