"""Every command and sub-command of `isokron` has --help that exits 0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from isokron.cli.main import app

# The commands the operator documentation promises; the walk below must find at least these.
DOCUMENTED = {
    "up", "down", "verify", "export", "checkpoint", "serve", "context", "demo",
    "db", "db upgrade", "workspace", "workspace create", "workspace list",
    "charter", "charter set", "charter show", "policy", "policy set", "policy list",
    "capability", "capability list", "capability set", "token", "token issue", "token list",
    "token revoke", "hermes", "hermes install", "proposal", "proposal list", "proposal decide",
    "escalation", "escalation list", "escalation decide",
}  # fmt: skip


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if hasattr(command, "list_commands"):  # a group (Typer bundles its own click)
        for name in command.list_commands(None):
            yield from _walk(command.get_command(None, name), (*path, name))


COMMANDS = list(_walk(typer.main.get_command(app)))


def test_the_command_tree_holds_every_documented_command() -> None:
    found = {" ".join(path) for path in COMMANDS if path}
    assert found >= DOCUMENTED, DOCUMENTED - found


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "isokron" for p in COMMANDS])
def test_help_exits_zero(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Usage:" in result.output
    assert "Traceback" not in result.output


def test_no_arguments_shows_help() -> None:
    result = CliRunner().invoke(app, [])
    assert "Usage:" in result.output
    for name in ("workspace", "verify", "token"):
        assert name in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("isokron ")
