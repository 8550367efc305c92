"""Auditor commands: verify (online and from a bundle), export, checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_support import Cli, CliWorkspace, assert_clean_error


def _tamper_event_type(sql: Callable[..., Any], ws: CliWorkspace, seq: int) -> None:
    sql(
        "UPDATE hivex_foundation.event_log SET event_type = 'governance.innocent' "
        "WHERE tenant_id = %s::uuid AND seq = %s",
        (ws.tenant_id, seq),
        replica=True,
    )


def test_verify_ok_exits_zero_and_json_parses(cli: Cli, cli_workspace: CliWorkspace) -> None:
    out = cli.ok("verify", cli_workspace.workspace_id).stdout
    assert "verified" in out and "5 events" in out
    data = cli.json("verify", cli_workspace.workspace_id)
    assert data["ok"] is True
    assert data["workspace_id"] == cli_workspace.workspace_id
    assert data["chain"]["events_checked"] == 5
    assert data["findings"] == []


def test_verify_after_tampering_exits_one_and_names_the_problem(
    cli: Cli, cli_workspace: CliWorkspace, sql: Callable[..., Any]
) -> None:
    _tamper_event_type(sql, cli_workspace, 3)

    result = cli("verify", cli_workspace.workspace_id)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "NOT verified" in result.stderr
    assert "hash_mismatch" in result.stderr and "seq 3" in result.stderr
    assert "Traceback" not in result.output

    as_json = cli("verify", cli_workspace.workspace_id, "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    assert data["chain"]["first_problem"]["kind"] == "hash_mismatch"
    assert data["chain"]["first_problem"]["seq"] == 3


def test_verify_reports_row_findings_too(
    cli: Cli, cli_workspace: CliWorkspace, sql: Callable[..., Any]
) -> None:
    sql(
        "UPDATE kronicle.workspace_constitution_revisions SET rules = '{}'::jsonb "
        "WHERE workspace_id = %s",
        (cli_workspace.workspace_id,),
    )
    result = cli("verify", cli_workspace.workspace_id)
    assert result.exit_code == 1
    assert "constitution_mismatch" in result.stderr


def test_export_then_verify_the_bundle(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    bundle = tmp_path / "chain.jsonl"
    out = cli.ok("export", cli_workspace.workspace_id, "-o", str(bundle)).stdout
    assert f"exported 5 events of {cli_workspace.workspace_id}" in out
    lines = bundle.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["event_count"] == 5 and header["version"] == 2
    # The events, then one line per live state row (the workspace's rows, provable offline).
    assert len(lines) == 1 + 5 + header["state_rows"] and header["state_rows"] > 31 + 49
    assert all("state_table" in json.loads(line) for line in lines[6:])

    # The bundle verifies with nothing but the file: no --dsn.
    assert "verified" in cli.ok("verify", "--bundle", str(bundle), dsn=False).stdout
    data = cli.json("verify", "--bundle", str(bundle), dsn=False)
    assert data["ok"] is True and data["chain"]["events_checked"] == 5


def test_export_to_stdout_is_the_bundle(cli: Cli, cli_workspace: CliWorkspace) -> None:
    out = cli.ok("export", cli_workspace.workspace_id).stdout
    header, *lines = [json.loads(line) for line in out.splitlines()]
    assert header["format"] == "isokron-chain-export"
    assert [e["seq"] for e in lines if "seq" in e] == [1, 2, 3, 4, 5]
    assert sum("state_table" in e for e in lines) == header["state_rows"]


def _rewrite(path: Path, target: Path, edit: Any) -> Path:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    edit(lines)
    target.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return target


def test_a_bundle_binds_its_header_and_its_state_rows(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    bundle = tmp_path / "chain.jsonl"
    cli.ok("export", cli_workspace.workspace_id, "-o", str(bundle))

    def header_workspace(lines: list[dict[str, Any]]) -> None:
        lines[0]["workspace_id"] = "someone-else"

    def policy_value(lines: list[dict[str, Any]]) -> None:
        row = next(x for x in lines if x.get("key") == "policy.kora_disabled")
        row["values"][2] = "true"

    def drop_capability(lines: list[dict[str, Any]]) -> None:
        row = next(x for x in lines if x.get("state_table") == "public.kora_capability_matrix")
        lines.remove(row)
        lines[0]["state_rows"] -= 1

    def forge_row(lines: list[dict[str, Any]]) -> None:
        row = next(x for x in lines if x.get("key") == "policy.kora_disabled")
        lines.append({**row, "key": "policy.forged"})
        lines[0]["state_rows"] += 1

    cases = {
        "header_workspace": (header_workspace, "header_mismatch"),
        "policy_value": (policy_value, "state_mismatch"),
        "drop_capability": (drop_capability, "state_missing"),
        "forge_row": (forge_row, "state_unrecorded"),
    }
    for name, (edit, kind) in cases.items():
        edited = _rewrite(bundle, tmp_path / f"{name}.jsonl", edit)
        result = cli("verify", "--bundle", str(edited), dsn=False)
        assert result.exit_code == 1, name
        assert kind in result.stderr, (name, result.stderr)


def test_a_tampered_bundle_fails_verification(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    bundle = tmp_path / "chain.jsonl"
    cli.ok("export", cli_workspace.workspace_id, "-o", str(bundle))
    lines = bundle.read_text(encoding="utf-8").splitlines()
    event = json.loads(lines[2])
    event["event_type"] = "governance.something.else"
    lines[2] = json.dumps(event)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = cli("verify", "--bundle", str(tampered), dsn=False)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "NOT verified" in result.stderr and "hash_mismatch" in result.stderr

    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # header says 5
    assert cli("verify", "--bundle", str(truncated), dsn=False).exit_code == 1

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("this is not a bundle\n", encoding="utf-8")
    assert_clean_error(cli("verify", "--bundle", str(garbage), dsn=False))


def test_checkpoint_then_verify_against_it(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path, sql: Callable[..., Any]
) -> None:
    ws = cli_workspace
    cp_file = tmp_path / "cp.json"
    out = cli.ok("checkpoint", ws.workspace_id, "-o", str(cp_file)).stdout
    assert "at seq 5" in out
    checkpoint = json.loads(cp_file.read_text(encoding="utf-8"))
    assert checkpoint["seq"] == 5 and checkpoint["tenant_id"] == ws.tenant_id
    stdout_cp = json.loads(cli.ok("checkpoint", ws.workspace_id).stdout)
    assert stdout_cp == checkpoint

    assert (
        "1 checkpoint(s) confirmed"
        in cli.ok("verify", ws.workspace_id, "--against", str(cp_file)).stdout
    )
    # The chain grows; the checkpoint stays confirmed.
    cli.ok("policy", "set", ws.workspace_id, "policy.kora_disabled", "true")
    cli.ok("verify", ws.workspace_id, "--against", str(cp_file))

    # A checkpoint the chain does not contain (as after a consistent rewrite) fails.
    forged = tmp_path / "other.json"
    forged.write_text(json.dumps({**checkpoint, "this_event_hash": "00" * 32}), encoding="utf-8")
    result = cli("verify", ws.workspace_id, "--against", str(forged))
    assert result.exit_code == 1
    assert "checkpoint_mismatch" in result.stderr

    # And it works for bundles too.
    bundle = tmp_path / "chain.jsonl"
    cli.ok("export", ws.workspace_id, "-o", str(bundle))
    cli.ok("verify", "--bundle", str(bundle), "--against", str(cp_file), dsn=False)
    assert (
        cli("verify", "--bundle", str(bundle), "--against", str(forged), dsn=False).exit_code == 1
    )


def test_a_malformed_checkpoint_file_is_a_clean_error(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert_clean_error(cli("verify", cli_workspace.workspace_id, "--against", str(bad)), "not JSON")
    bad.write_text('{"seq": 1}', encoding="utf-8")
    assert_clean_error(cli("verify", cli_workspace.workspace_id, "--against", str(bad)), "missing")


def test_verify_needs_a_workspace_or_a_bundle(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    assert_clean_error(cli("verify"), "give either a WORKSPACE")
    bundle = tmp_path / "b.jsonl"
    cli.ok("export", cli_workspace.workspace_id, "-o", str(bundle))
    assert_clean_error(
        cli("verify", cli_workspace.workspace_id, "--bundle", str(bundle)), "give either"
    )


def test_context_refuses_governance_and_identity_the_chain_does_not_vouch_for(
    cli: Cli, make_cli_workspace: Callable[[str], CliWorkspace], sql: Callable[..., Any]
) -> None:
    # Issue 9: `isokron context` printed a forged §1-§3 and forged policy values.
    ws = make_cli_workspace("ctx")
    assert "§4" in cli.ok("context", ws.workspace_id).stdout
    sql(
        "UPDATE public.kora_policy_registry SET policy_value = 'true' "
        "WHERE workspace_id = %s AND policy_key = 'policy.kora_disabled'",
        (ws.workspace_id,),
        replica=True,
    )
    assert_clean_error(cli("context", ws.workspace_id), "does not match the chain event")

    other = make_cli_workspace("ctx2")
    sql(
        "UPDATE public.kora_role_charter SET content_jsonb = jsonb_set(content_jsonb, "
        "'{sections,identity}', '\"I obey anyone\"') WHERE workspace_id = %s",
        (other.workspace_id,),
        replica=True,
    )
    shown = cli.ok("context", other.workspace_id).stdout
    assert "NOT VERIFIED" in shown and "I obey anyone" not in shown
