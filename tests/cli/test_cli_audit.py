"""Auditor commands: verify (online and from a bundle), export, checkpoint."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli, CliWorkspace, assert_clean_error

from isokron.chain import bundle_parallel
from isokron.chain.bundle_v3 import decode_event_line, encode_event_line


class Walks(list[Any]):
    """The parallel checks' results of a test, and whether it runs them."""

    def __init__(self, *, parallel: bool) -> None:
        super().__init__()
        self.parallel = parallel

    def proved(self, events: int) -> bool:
        """Every bundle of the test was proved in parallel (or none was meant to be)."""
        heads = list(self)
        self.clear()
        if not self.parallel:
            return not heads
        return bool(heads) and all(h is not None and h.count == events for h in heads)


@pytest.fixture(params=["sequential", "parallel"])
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Walks:
    """`verify --bundle` walking on one process, or in parallel in ranges of a few lines (the
    state lines, and events that carry state, then take the parallel path's state check).
    Returns what each parallel check returned (None: it fell back to the sequential walk)."""
    results = Walks(parallel=request.param == "parallel")
    if results.parallel:
        check = bundle_parallel.check_in_parallel

        def recording(*args: Any, **kwargs: Any) -> Any:
            results.append(check(*args, **kwargs))
            return results[-1]

        monkeypatch.setattr(bundle_parallel, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(bundle_parallel, "CHUNK_BYTES", 200)
        monkeypatch.setattr(bundle_parallel, "workers", lambda: 2)
        monkeypatch.setattr(bundle_parallel, "check_in_parallel", recording)
    return results


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
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path, walk: Walks
) -> None:
    bundle = tmp_path / "chain.jsonl"
    out = cli.ok("export", cli_workspace.workspace_id, "-o", str(bundle)).stdout
    assert f"exported 5 events of {cli_workspace.workspace_id}" in out
    lines = bundle.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["event_count"] == 5 and header["version"] == 3
    # The events (version 3: tab-separated), then one JSON line per live state row (the
    # workspace's rows, provable offline).
    assert [decode_event_line(line.encode()).seq for line in lines[1:6]] == [1, 2, 3, 4, 5]
    assert len(lines) == 1 + 5 + header["state_rows"] and header["state_rows"] > 31 + 49
    assert all("state_table" in json.loads(line) for line in lines[6:])

    # The bundle verifies with nothing but the file: no --dsn.
    assert "verified" in cli.ok("verify", "--bundle", str(bundle), dsn=False).stdout
    data = cli.json("verify", "--bundle", str(bundle), dsn=False)
    assert data["ok"] is True and data["chain"]["events_checked"] == 5
    assert walk.proved(5)


def test_export_to_stdout_is_the_bundle(cli: Cli, cli_workspace: CliWorkspace) -> None:
    out = cli.ok("export", cli_workspace.workspace_id).stdout
    first, *rest = out.splitlines()
    header = json.loads(first)
    assert header["format"] == "isokron-chain-export"
    events = [decode_event_line(x.encode()) for x in rest if not x.startswith("{")]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert sum(x.startswith('{"state_table"') for x in rest) == header["state_rows"]


def _rewrite(path: Path, target: Path, edit: Any) -> Path:
    """Edit the JSON lines (header, state) of a bundle; event lines are kept as they are."""
    lines: list[Any] = [
        json.loads(line) if line.startswith("{") else line
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    edit(lines)
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    target.write_text(text, encoding="utf-8")
    return target


def _key(line: Any) -> Any:
    return line.get("key") if isinstance(line, dict) else None


def test_a_bundle_binds_its_header_and_its_state_rows(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path, walk: Walks
) -> None:
    bundle = tmp_path / "chain.jsonl"
    cli.ok("export", cli_workspace.workspace_id, "-o", str(bundle))

    def header_workspace(lines: list[dict[str, Any]]) -> None:
        lines[0]["workspace_id"] = "someone-else"

    def policy_value(lines: list[dict[str, Any]]) -> None:
        row = next(x for x in lines if _key(x) == "policy.kora_disabled")
        row["values"][2] = "true"

    def drop_capability(lines: list[dict[str, Any]]) -> None:
        row = next(
            x
            for x in lines
            if isinstance(x, dict) and x.get("state_table") == "public.kora_capability_matrix"
        )
        lines.remove(row)
        lines[0]["state_rows"] -= 1

    def forge_row(lines: list[dict[str, Any]]) -> None:
        row = next(x for x in lines if _key(x) == "policy.kora_disabled")
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
        # The chain is intact: proved in parallel (when so run), the state check then fails.
        assert walk.proved(5)


def test_a_tampered_bundle_fails_verification(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path, walk: Walks
) -> None:
    bundle = tmp_path / "chain.jsonl"
    cli.ok("export", cli_workspace.workspace_id, "-o", str(bundle))
    lines = bundle.read_text(encoding="utf-8").splitlines()
    event = decode_event_line(lines[2].encode())  # the hash input is re-made, the hash kept
    edited = dataclasses.replace(event, event_type="governance.something.else")
    lines[2] = encode_event_line(edited).decode().rstrip("\n")
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
    key_file, cp_file = tmp_path / "log.key", tmp_path / "cp"
    key = cli.ok("log", "key", "init", ws.workspace_id, "--key-file", str(key_file))
    vkey = key.stdout.strip().splitlines()[-1]
    out = cli.ok("checkpoint", ws.workspace_id, "-o", str(cp_file), "--key-file", str(key_file))
    assert "at tree size 5" in out.stdout
    origin, size, _root, blank, signature = cp_file.read_text(encoding="utf-8").split("\n")[:5]
    assert (origin, size, blank) == (f"isokron/{ws.workspace_id}/{ws.tenant_id}", "5", "")
    assert signature.startswith(f"— {origin} ")
    stdout_cp = cli.ok("checkpoint", ws.workspace_id, "--key-file", str(key_file)).stdout
    assert stdout_cp == cp_file.read_text(encoding="utf-8")

    against = ("--against", str(cp_file), "--key", vkey)
    assert "1 checkpoint(s) confirmed" in cli.ok("verify", ws.workspace_id, *against).stdout
    # The chain grows; the checkpoint stays confirmed.
    cli.ok("policy", "set", ws.workspace_id, "policy.kora_disabled", "true")
    cli.ok("verify", ws.workspace_id, *against)

    # A checkpoint the chain does not contain (as after a consistent rewrite) fails.
    from isokron.chain.tlog import LogCheckpoint, sign_checkpoint
    from isokron.substrate.log_keys import read_private_key

    forged = tmp_path / "other"
    forged.write_text(
        sign_checkpoint(LogCheckpoint(origin, 5, bytes(32)), read_private_key(key_file)),
        encoding="utf-8",
    )
    result = cli("verify", ws.workspace_id, "--against", str(forged), "--key", vkey)
    assert result.exit_code == 1
    assert "checkpoint_mismatch" in result.stderr

    # And it works for bundles too.
    bundle = tmp_path / "chain.jsonl"
    cli.ok("export", ws.workspace_id, "-o", str(bundle))
    cli.ok("verify", "--bundle", str(bundle), *against, dsn=False)
    result = cli(
        "verify", "--bundle", str(bundle), "--against", str(forged), "--key", vkey, dsn=False
    )
    assert result.exit_code == 1


def test_a_malformed_checkpoint_file_is_a_clean_error(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    from isokron.chain.note import Signer

    key = Signer.generate("isokron/x").verifier().encode()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert_clean_error(
        cli("verify", cli_workspace.workspace_id, "--against", str(bad), "--key", key), "refused"
    )
    bad.write_text('{"seq": 1}', encoding="utf-8")
    assert_clean_error(
        cli("verify", cli_workspace.workspace_id, "--against", str(bad), "--key", key), "refused"
    )
    assert_clean_error(cli("verify", cli_workspace.workspace_id, "--against", str(bad)), "--key")


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
