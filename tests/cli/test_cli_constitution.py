"""`isokron constitution show|set`: revisions are chained, bad rules never reach the database."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import Cli, CliWorkspace, assert_clean_error

from isokron.governance.seeds import DEFAULT_CONSTITUTION_RULES


def test_show_prints_the_default_revision(cli: Cli, cli_workspace: CliWorkspace) -> None:
    data = cli.json("constitution", "show", cli_workspace.workspace_id)
    assert data["revision_number"] == 1
    assert data["rules"] == DEFAULT_CONSTITUTION_RULES
    assert len(data["rules_hash"]) == 64
    text = cli.ok("constitution", "show", cli_workspace.workspace_id).stdout
    assert "revision 1" in text and DEFAULT_CONSTITUTION_RULES["rules"][0]["id"] in text


def test_set_adds_a_revision_that_verify_accepts(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    rules = {
        "version": 1,
        "rules": [
            {"id": "deny-word", "effect": "deny", "match": {"content_pattern": "forbidden-word"}},
        ],
    }
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules), encoding="utf-8")
    result = cli.json("constitution", "set", cli_workspace.workspace_id, str(path))
    assert result["revision_number"] == 2
    assert cli.json("constitution", "show", cli_workspace.workspace_id)["rules"] == rules
    assert cli.json("verify", cli_workspace.workspace_id)["ok"] is True


def test_a_rule_that_does_not_compile_is_refused_before_the_database(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "rules": [
                    {"id": "broken", "effect": "deny", "match": {"content_pattern": "("}},
                ],
            }
        ),
        encoding="utf-8",
    )
    assert_clean_error(cli("constitution", "set", cli_workspace.workspace_id, str(path)), "broken")
    assert cli.json("constitution", "show", cli_workspace.workspace_id)["revision_number"] == 1
    path.write_text("not json", encoding="utf-8")
    assert_clean_error(cli("constitution", "set", cli_workspace.workspace_id, str(path)), "JSON")
