"""Helpers of the CLI tests: run `isokron` in-process (Typer's CliRunner) and check errors."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from typer.testing import CliRunner, Result

from isokron.cli.main import app

# Variables that would silently point a command somewhere else.
CLEAN_ENV: dict[str, str | None] = {
    "ISOKRON_DSN": None,
    "ISOKRON_READER_DSN": None,
    "ISOKRON_GATEWAY_DSN": None,
    "ISOKRON_DATA_DIR": None,
    "ISOKRON_LOG_LEVEL": None,
}
TOKEN_RE = re.compile(r"wsk_[A-Za-z0-9]{40}")


@dataclass(frozen=True)
class CliWorkspace:
    workspace_id: str
    tenant_id: str
    actors: dict[str, str]


class Cli:
    """Invoke `isokron` in-process; ``dsn`` is appended unless told otherwise."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.runner = CliRunner(env=CLEAN_ENV)

    def __call__(self, *args: str, dsn: str | None | bool = True) -> Result:
        argv = list(args)
        if dsn is True:
            argv += ["--dsn", self.dsn]
        elif isinstance(dsn, str):
            argv += ["--dsn", dsn]
        return self.runner.invoke(app, argv)

    def ok(self, *args: str, **kw: Any) -> Result:
        result = self(*args, **kw)
        assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
        return result

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kw).stdout)


def assert_clean_error(result: Result, *fragments: str) -> str:
    """Exit 1 with ONE line `error: …` on stderr: no traceback, no crash."""
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    # CliRunner reports an uncaught exception as exit code 1 too; a clean exit is SystemExit.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
