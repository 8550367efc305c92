"""The MCP Inspector (npm ``@modelcontextprotocol/inspector``, ``--cli`` mode) against the gateway.

The fixture installs the pinned Inspector with npm into pytest's cache directory (project-local,
ignored by git), once. If npm cannot fetch it the tests are skipped with the reason, unless
``ISOKRON_REQUIRE_INSPECTOR=1`` declares the Inspector required: then they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from gateway_harness import Gateways, Tenant, env_flag, events_since, head, make_tenant

from isokron.substrate.dsn import SubstrateDSNs

INSPECTOR = "@modelcontextprotocol/inspector"
INSPECTOR_VERSION = "2.12.0"
REQUIRED_ENV = "ISOKRON_REQUIRE_INSPECTOR"
INSTALL_TIMEOUT_SECONDS = 600
RUN_TIMEOUT_SECONDS = 120


def _unavailable(reason: str) -> None:
    if env_flag(REQUIRED_ENV):
        pytest.fail(f"the MCP Inspector is required ({REQUIRED_ENV}=1) but {reason}")
    pytest.skip(f"MCP Inspector unavailable: {reason} (set {REQUIRED_ENV}=1 to require it)")


@pytest.fixture(scope="module")
def inspector(request: pytest.FixtureRequest) -> Path:
    """The Inspector's launcher, installed once into .pytest_cache."""
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed")
    prefix = request.config.cache.mkdir(f"isokron-mcp-inspector-{INSPECTOR_VERSION}")
    launcher = prefix / "node_modules" / ".bin" / "mcp-inspector"
    if not launcher.exists():
        try:
            subprocess.run(
                [
                    str(npm),
                    "install",
                    "--prefix",
                    str(prefix),
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    f"{INSPECTOR}@{INSPECTOR_VERSION}",
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_SECONDS,
            )
        except subprocess.CalledProcessError as exc:
            _unavailable(f"npm install failed: {(exc.stderr or exc.stdout).strip()[-800:]}")
        except subprocess.TimeoutExpired:
            _unavailable(f"npm install took longer than {INSTALL_TIMEOUT_SECONDS} s")
    if not launcher.exists():
        _unavailable(f"npm installed {INSPECTOR} but {launcher} is missing")
    return launcher


@pytest.fixture(scope="module")
async def tenant(admin_pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(admin_pool, "inspector")


@pytest.fixture(scope="module")
async def http_gateway(
    substrate: SubstrateDSNs, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateways]:
    gateways = Gateways("http", substrate, tmp_path_factory.mktemp("inspector"))
    await gateways.start()
    try:
        yield gateways
    finally:
        await gateways.close()


async def run_inspector(launcher: Path, tmp_path: Path, *arguments: str) -> Any:
    """Run ``mcp-inspector --cli ...`` and parse the JSON it prints."""
    env = {**os.environ, "MCP_CATALOG_PATH": str(tmp_path / "catalog.json"), "NO_COLOR": "1"}
    process = await asyncio.create_subprocess_exec(
        str(launcher),
        "--cli",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_SECONDS)
    assert process.returncode == 0, f"inspector failed ({process.returncode}):\n{err.decode()}"
    return json.loads(out.decode())


async def test_inspector_lists_the_tools_over_stdio(
    inspector: Path, substrate: SubstrateDSNs, tenant: Tenant, tmp_path: Path
) -> None:
    listed = await run_inspector(
        inspector,
        tmp_path,
        "-e",
        f"KORA_SERVICE_TOKEN={tenant.kora_token}",
        "-e",
        f"ISOKRON_READER_DSN={substrate.reader}",
        "-e",
        f"ISOKRON_GATEWAY_DSN={substrate.gateway}",
        "--method",
        "tools/list",
        sys.executable,
        "-m",
        "isokron.gateway",
    )
    names = {tool["name"] for tool in listed["tools"]}
    assert {"kora__append_event", "kora__write_agent_scratchpad", "iso_node_create"} <= names


async def test_inspector_calls_a_tool_over_http(
    inspector: Path,
    http_gateway: Gateways,
    tenant: Tenant,
    admin_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    assert http_gateway.http is not None
    before = await head(admin_pool, tenant.workspace_id)
    result = await run_inspector(
        inspector,
        tmp_path,
        http_gateway.http.url,
        "--transport",
        "http",
        "--header",
        f"Authorization: Bearer {tenant.kora_token}",
        "--method",
        "tools/call",
        "--tool-name",
        "kora__append_event",
        "--tool-arg",
        "event_type=kora.inspector.called",
    )
    assert result.get("isError") is not True, result
    [event] = await events_since(admin_pool, tenant.workspace_id, before)
    assert event["event_type"] == "kora.inspector.called"
    assert str(event["event_id"]) == result["structuredContent"]["event_id"]
