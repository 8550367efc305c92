"""`isokron maintain` over every workspace: one workspace that cannot be maintained does not stop
the others (migration 0044)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cli_support import Cli, CliWorkspace

SLA = "policy.kora_escalation_sla_hours"


def test_one_failing_workspace_does_not_stop_the_others(
    cli: Cli,
    make_cli_workspace: Callable[[str], CliWorkspace],
    agent_write: Callable[..., dict[str, Any]],
    sql: Callable[..., Any],
) -> None:
    broken = make_cli_workspace("mt-broken")
    healthy = make_cli_workspace("mt-healthy")
    # A number the governed write accepts, but whose cut-off timestamp overflows.
    cli.ok("policy", "set", broken.workspace_id, SLA, "1e20")
    cli.ok("policy", "set", healthy.workspace_id, SLA, "0")
    raised = agent_write(healthy, "raise_escalation", {"tool": "t", "reason": "decide me"})
    escalation = raised["escalation_id"]

    result = cli("maintain", "--json")

    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    by_ws = {w["workspace_id"]: w for w in json.loads(result.stdout)["workspaces"]}
    assert "timestamp out of range" in by_ws[broken.workspace_id]["failed"]
    assert by_ws[healthy.workspace_id]["escalations_expired"] == 1
    status = sql(
        "SELECT status FROM kronicle.escalations WHERE escalation_id = %s::uuid",
        (escalation,),
    )
    assert status == "expired"
    assert cli("verify", healthy.workspace_id).exit_code == 0
    text = cli("maintain")
    assert text.exit_code == 1
    assert f"{broken.workspace_id}: maintenance failed (timestamp out of range)" in text.stdout
