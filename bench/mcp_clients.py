"""MCP sessions for the benchmarks, all through the official MCP Python SDK client.

- ``isokron_stdio_session``: spawns ``python -m isokron.gateway --transport stdio`` with the
  token in ``KORA_SERVICE_TOKEN`` (``mcp.client.stdio.stdio_client``).
- ``HttpGateway`` + ``isokron_http_session``: one ``--transport http`` gateway process, and
  sessions to its ``/mcp`` endpoint with ``Authorization: Bearer wsk_…``
  (``mcp.client.streamable_http.streamable_http_client``).
- ``reference_session``: spawns the reference memory server with ``node`` (stdio).

Server stderr goes to a log file so that the benchmark's table stays readable.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from bench.substrate import BenchDatabase

GATEWAY_MODULE = "isokron.gateway"
STARTUP_TIMEOUT_SECONDS = 60.0


class ToolCallFailed(RuntimeError):
    """A benchmarked tool call came back as an MCP tool error."""


def _gateway_args(db: BenchDatabase, transport: str) -> list[str]:
    return [
        "-m",
        GATEWAY_MODULE,
        "--reader-dsn",
        db.dsns.reader,
        "--gateway-dsn",
        db.dsns.gateway,
        "--transport",
        transport,
    ]


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> Any:
    """Call a tool and raise ToolCallFailed when it answers with a tool error."""
    result = await session.call_tool(tool, arguments)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise ToolCallFailed(f"{tool} failed: {text[:500]}")
    return result


@asynccontextmanager
async def isokron_stdio_session(
    db: BenchDatabase, token: str, errlog: IO[str]
) -> AsyncIterator[ClientSession]:
    """A session with a freshly spawned stdio gateway."""
    params = StdioServerParameters(
        command=sys.executable,
        args=_gateway_args(db, "stdio"),
        env={"KORA_SERVICE_TOKEN": token},
    )
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


@asynccontextmanager
async def reference_session(
    entry: Path, memory_file: Path, errlog: IO[str]
) -> AsyncIterator[ClientSession]:
    """A session with a freshly spawned reference memory server."""
    params = StdioServerParameters(
        command="node", args=[str(entry)], env={"MEMORY_FILE_PATH": str(memory_file)}
    )
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpGateway:
    """One ``--transport http`` gateway process on a free local port."""

    def __init__(self, db: BenchDatabase, errlog: IO[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._args = [
            sys.executable,
            *_gateway_args(db, "http"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self._errlog = errlog
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HttpGateway:
        self.process = subprocess.Popen(
            self._args, stdin=subprocess.DEVNULL, stdout=self._errlog, stderr=self._errlog
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the HTTP gateway exited with status {self.process.returncode} "
                    f"(see {getattr(self._errlog, 'name', 'its log')})"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the HTTP gateway did not listen on {self.port} in time")

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@asynccontextmanager
async def isokron_http_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    """A streamable-HTTP session with the gateway at ``url``."""
    client = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(30.0, read=300.0),
    )
    async with client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
