"""Issue 9 item 7: bad input ends a command with ONE clear line and a non-zero exit, never a
traceback — and a password in a DSN is never printed. Every case runs through the real CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli, CliWorkspace, assert_clean_error

from isokron.chain.note import Signer
from isokron.substrate.dsn import SubstrateDSNs

SECRET = "s3cretPW-never-printed"


def test_reader_or_gateway_dsn_given_as_admin(
    cli: Cli, cli_workspace: CliWorkspace, substrate: SubstrateDSNs
) -> None:
    for dsn, role in ((substrate.reader, "reader"), (substrate.gateway, "gateway")):
        for args in (
            ("verify", cli_workspace.workspace_id),
            ("policy", "list", cli_workspace.workspace_id),
        ):
            assert_clean_error(cli(*args, dsn=dsn), f"the {role} role", "admin")


def test_database_without_the_schema(cli: Cli, fresh_database: Callable[[], str]) -> None:
    empty = fresh_database()
    for args in (("verify", "acme"), ("policy", "list", "acme"), ("workspace", "list")):
        assert_clean_error(cli(*args, dsn=empty), "no IsoKron schema", "isokron db upgrade")


def test_dsn_host_with_a_space_and_passwords_never_printed(cli: Cli) -> None:
    line = assert_clean_error(
        cli("verify", "acme", dsn=f"postgresql://admin:{SECRET}@bad host:5432/db"), "space"
    )
    assert SECRET not in line
    for dsn in (
        f"postgresql://admin:{SECRET}@127.0.0.1:1/x",  # unreachable
        f"postgresql://admin:{SECRET}@127.0.0.1:notaport/x",
        f"mysql://admin:{SECRET}@127.0.0.1/x",
    ):
        result = cli("workspace", "list", dsn=dsn)
        assert result.exit_code == 1
        assert SECRET not in result.output, result.output


def test_data_dir_on_a_regular_file(cli: Cli, tmp_path: Path) -> None:
    regular = tmp_path / "not-a-dir"
    regular.write_text("x")
    assert_clean_error(
        cli("verify", "acme", "--data-dir", str(regular), dsn=False), "is a file", "--data-dir"
    )


def test_policy_value_nested_10000_deep(cli: Cli, cli_workspace: CliWorkspace) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    result = cli("policy", "set", cli_workspace.workspace_id, "policy.kora_disabled", deep)
    assert_clean_error(result, "nested too deeply")


@pytest.mark.parametrize("days", ["1e12", "999999999", "inf", "-inf", "nan", "0", "-1"])
def test_token_expiry_out_of_range(cli: Cli, cli_workspace: CliWorkspace, days: str) -> None:
    result = cli("token", "issue", cli_workspace.workspace_id, "--expires-in-days", days)
    assert_clean_error(result, "--expires-in-days must be more than 0")


def test_token_expiry_help_says_what_it_means(cli: Cli, cli_workspace: CliWorkspace) -> None:
    help_text = " ".join(cli("token", "issue", "--help", dsn=False).stdout.split())
    assert "never expires" in help_text
    issued = cli.json("token", "issue", cli_workspace.workspace_id, "--expires-in-days", "0.5")
    assert issued["expires_at"] is not None


def test_infinite_occurred_at_is_a_finding_not_a_crash(
    cli: Cli,
    cli_workspace: CliWorkspace,
    sql: Callable[..., Any],
) -> None:
    sql(
        "UPDATE hivex_foundation.event_log SET occurred_at = 'infinity' "
        "WHERE tenant_id = %s::uuid AND seq = 2",
        (cli_workspace.tenant_id,),
        replica=True,
    )
    result = cli("verify", cli_workspace.workspace_id, "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.stdout, result.output
    report = json.loads(result.stdout)
    assert any(p["seq"] == 2 for p in report["chain"]["problems"])


@pytest.mark.parametrize("content", ["", "{not json", "[]", "null", "\x00\x01"])
def test_verify_against_an_empty_or_malformed_file(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path, content: str
) -> None:
    bad = tmp_path / "cp"
    bad.write_text(content)
    key = Signer.generate("isokron/x").verifier().encode()
    result = cli("verify", cli_workspace.workspace_id, "--against", str(bad), "--key", key)
    assert_clean_error(result, "refused")
