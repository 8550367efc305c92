"""Library errors end a command as ONE line `error: …` on stderr and exit 1, never a traceback:
an unknown workspace, a malformed DSN, an unreachable server, a bad file or value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import CLEAN_ENV, Cli, CliWorkspace, assert_clean_error

MALFORMED_DSN = "mysql://x/y"
UNREACHABLE_DSN = "postgresql://postgres@127.0.0.1:1/x"
ISOKRON = str(Path(sys.executable).with_name("isokron"))

# Commands that take a workspace, with whatever else they need.
WORKSPACE_COMMANDS = [
    ("verify", "{ws}"),
    ("export", "{ws}"),
    ("checkpoint", "{ws}"),
    ("charter", "show", "{ws}"),
    ("policy", "list", "{ws}"),
    ("policy", "set", "{ws}", "policy.kora_disabled", "true"),
    ("capability", "list", "{ws}"),
    ("capability", "set", "{ws}", "cap_append_event", "kora"),
    ("token", "issue", "{ws}"),
    ("token", "list", "{ws}"),
    ("token", "revoke", "{ws}", "wsk_12345678"),
    ("proposal", "list", "{ws}"),
    ("proposal", "decide", "{ws}", "00000000-0000-4000-8000-000000000000", "accept"),
    ("escalation", "list", "{ws}"),
    ("escalation", "decide", "{ws}", "00000000-0000-4000-8000-000000000000", "approve"),
]
# Commands that reach the server (each one a different code path to the database).
SERVER_COMMANDS = [
    ("workspace", "list"),
    ("workspace", "create", "newone"),
    ("db", "upgrade"),
    ("up",),
    ("verify", "somewhere"),
    ("export", "somewhere"),
    ("checkpoint", "somewhere"),
    ("token", "list", "somewhere"),
    ("charter", "show", "somewhere"),
]


def _ids(commands: list[tuple[str, ...]]) -> list[str]:
    return [" ".join(c[:2]) for c in commands]


@pytest.mark.parametrize("command", WORKSPACE_COMMANDS, ids=_ids(WORKSPACE_COMMANDS))
def test_an_unknown_workspace_is_a_clean_error(cli: Cli, command: tuple[str, ...]) -> None:
    args = [a.format(ws="no-such-workspace") for a in command]
    assert_clean_error(cli(*args), "unknown workspace 'no-such-workspace'")


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=_ids(SERVER_COMMANDS))
def test_a_malformed_dsn_is_a_clean_error(cli: Cli, command: tuple[str, ...]) -> None:
    assert_clean_error(cli(*command, dsn=MALFORMED_DSN), "scheme 'mysql' is not supported")


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=_ids(SERVER_COMMANDS))
def test_an_unreachable_server_is_a_clean_error(cli: Cli, command: tuple[str, ...]) -> None:
    line = assert_clean_error(cli(*command, dsn=UNREACHABLE_DSN), "127.0.0.1:1")
    assert "reach" in line


def test_a_dsn_without_a_database_is_a_clean_error(cli: Cli) -> None:
    assert_clean_error(
        cli("workspace", "list", dsn="postgresql://u@localhost:5432"), "names no database"
    )


@pytest.mark.parametrize("command", [("workspace", "list"), ("verify", "x"), ("db", "upgrade")])
def test_a_password_in_the_dsn_is_not_printed(cli: Cli, command: tuple[str, ...]) -> None:
    result = cli(*command, dsn="postgresql://postgres:hunter2@127.0.0.1:1/x")
    assert_clean_error(result)
    assert "hunter2" not in result.output


def test_a_bad_decision_word_is_a_clean_error(cli: Cli, cli_workspace: CliWorkspace) -> None:
    assert_clean_error(
        cli("proposal", "decide", cli_workspace.workspace_id, "not-a-uuid", "accept"),
    )


def test_an_invalid_workspace_id_is_a_clean_error(cli: Cli) -> None:
    assert_clean_error(cli("workspace", "create", "bad id!"), "workspace id must be")


def test_an_invalid_charter_for_a_new_workspace_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text("# nothing useful\n", encoding="utf-8")
    assert_clean_error(
        cli("workspace", "create", "never-made", "--charter", str(bad)), "no '## Identity'"
    )
    listed = [w["workspace_id"] for w in cli.json("workspace", "list")]
    assert "never-made" not in listed


# ------------------------------------------------------------------ the real entry point
def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return subprocess.run(
        [ISOKRON, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("workspace", "list", "--dsn", MALFORMED_DSN), "is not supported"),
        (("workspace", "list", "--dsn", UNREACHABLE_DSN), "127.0.0.1:1"),
        (("verify", "nope", "--dsn", UNREACHABLE_DSN), "127.0.0.1:1"),
    ],
    ids=["malformed-dsn", "unreachable-asyncpg", "unreachable-psycopg"],
)
def test_the_installed_command_prints_one_line_and_exits_one(
    args: tuple[str, ...], fragment: str
) -> None:
    proc = _run(*args)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_the_installed_command_rejects_an_invalid_charter_cleanly(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text("## Identity\n\nKora.\n", encoding="utf-8")
    proc = _run("charter", "set", cli_workspace.workspace_id, str(bad), "--dsn", cli.dsn)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(
        "error: the role charter has no '## Authority"
    )
    assert "Traceback" not in proc.stderr
