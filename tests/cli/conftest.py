"""CLI fixtures: run `isokron` in-process (Typer's CliRunner) against the test substrate.

Commands get ``--dsn`` with the session substrate's admin DSN. Setup that an agent would do
(kora's writes) goes straight through the owner's ``isokron_api.write_as`` with psycopg, so these
tests need no event loop of their own: the commands run their own with ``asyncio.run``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from cli_support import Cli, CliWorkspace

from isokron.substrate.dsn import SubstrateDSNs


@pytest.fixture(scope="session")
def cli(substrate: SubstrateDSNs) -> Cli:
    return Cli(substrate.admin)


@pytest.fixture
def make_cli_workspace(cli: Cli) -> Callable[[str], CliWorkspace]:
    def make(prefix: str = "cli") -> CliWorkspace:
        ws_id = f"{prefix}-{uuid4().hex[:8]}"
        data = cli.json("workspace", "create", ws_id, "--name", f"CLI {prefix}")
        assert data["workspace_id"] == ws_id
        return CliWorkspace(ws_id, data["tenant_id"], data["actors"])

    return make


@pytest.fixture
def cli_workspace(make_cli_workspace: Callable[[str], CliWorkspace]) -> CliWorkspace:
    return make_cli_workspace("cli")


@pytest.fixture
def sql(substrate: SubstrateDSNs) -> Iterator[Callable[..., Any]]:
    """Run one statement as the superuser admin; returns the first column of the first row."""
    conn = psycopg.connect(substrate.admin, autocommit=True)

    def run(statement: str, params: Sequence[Any] = (), *, replica: bool = False) -> Any:
        with conn.transaction():
            if replica:  # bypass the append-only trigger: tampering, for the tests that need it
                # (on Citus the setting must reach the workers, where the shards' triggers fire)
                conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
                conn.execute("SET LOCAL session_replication_role = replica")
            cur = conn.execute(statement, params)
            row = cur.fetchone() if cur.description else None
        return None if row is None else row[0]

    yield run
    conn.close()


@pytest.fixture
def agent_write(sql: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    """An agent write through the owner's entry point, naming the actor (the gateway's checks)."""

    def write(ws: CliWorkspace, op: str, args: dict[str, Any], kind: str = "kora") -> dict:
        return sql(
            "SELECT isokron_api.write_as(%s, %s, %s::uuid, %s::jsonb, NULL)",
            (op, ws.workspace_id, ws.actors[kind], json.dumps(args)),
        )

    return write
