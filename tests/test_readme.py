"""README.md stays true to the code: its CLI reference is the generated one, and its two set-up
commands are the ones .ci/run runs."""

from __future__ import annotations

import re
from pathlib import Path

from isokron.cli.main import app
from isokron.cli.reference import END, START, render

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_matches_the_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(START) : readme.index(END) + len(END)]
    assert block == render(app), (
        "README.md's CLI reference is stale: "
        "run `python -m isokron.cli.reference --write README.md`"
    )


def test_every_command_is_in_the_reference() -> None:
    block = render(app)
    for name in (
        "up",
        "down",
        "db upgrade",
        "workspace create",
        "workspace list",
        "charter set",
        "charter show",
        "policy set",
        "policy list",
        "capability list",
        "token issue",
        "token list",
        "token revoke",
        "verify",
        "export",
        "checkpoint",
        "serve",
        "context",
        "demo",
        "hermes install",
    ):
        assert f"### `isokron {name}" in block, name


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    setup, tests = commands[0], commands[1]
    assert "isokron up" in setup and "pip install -e ." in setup
    assert tests.endswith("pytest")
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
