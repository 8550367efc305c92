"""Real gateway processes and MCP client sessions for the reliability suite.

``HttpGatewayProcess`` runs ``python -m isokron.gateway --transport http`` and can be killed
with ``kill -9`` and started again on the same port; ``http_session``/``stdio_session`` open the
official MCP client over either transport (stdio spawns its own gateway, which
``kill9_stdio_gateways`` finds by its token). ``LoopThread`` and ``HeldSession`` let synchronous
(hypothesis) tests drive sessions that live on an event loop of their own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Mapping
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult

from isokron.substrate.dsn import SubstrateDSNs

T = TypeVar("T")

CLIENT_TIMEOUT_SECONDS = 60.0
#: Generous bound that only stops a hung test; nothing asserts on how long anything took.
HANG_GUARD_SECONDS = 300.0
START_ATTEMPTS = 600  # x 0.1 s between health probes


# ------------------------------------------------------------------------- gateway processes


def gateway_argv(dsns: SubstrateDSNs, *extra: str) -> list[str]:
    """``python -m isokron.gateway`` against ``dsns`` (arguments after the interpreter)."""
    return [
        "-m",
        "isokron.gateway",
        "--reader-dsn",
        dsns.reader,
        "--gateway-dsn",
        dsns.gateway,
        *extra,
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpGatewayProcess:
    """One ``python -m isokron.gateway --transport http`` process, restartable on its port."""

    def __init__(
        self,
        dsns: SubstrateDSNs,
        log_path: Path,
        *,
        governance_ttl: float | None = 0.0,
        log_level: str = "INFO",
        port: int | None = None,
    ) -> None:
        self.dsns = dsns
        self.log_path = log_path
        self.port = port or free_port()
        self.governance_ttl = governance_ttl
        self.log_level = log_level
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        extra = ["--transport", "http", "--port", str(self.port), "--log-level", self.log_level]
        if self.governance_ttl is not None:
            extra += ["--governance-ttl", str(self.governance_ttl)]
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *gateway_argv(self.dsns, *extra),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.starts += 1
        async with httpx.AsyncClient(timeout=5.0) as client:
            for _ in range(START_ATTEMPTS):
                if self.process.returncode is not None:
                    raise RuntimeError(f"the HTTP gateway exited:\n{self.log_text()[-4000:]}")
                try:
                    if (await client.get(self.health_url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the HTTP gateway did not become healthy:\n{self.log_text()[-4000:]}")

    async def kill9(self) -> None:
        """``kill -9`` the process and reap it."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@asynccontextmanager
async def http_session(url: str, token: str) -> AsyncIterator[Client]:
    """The official MCP client over streamable HTTP with ``Authorization: Bearer``."""
    async with (
        create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(
            streamable_http_client(url, http_client=http),
            read_timeout_seconds=CLIENT_TIMEOUT_SECONDS,
        ) as client,
    ):
        yield client


@asynccontextmanager
async def stdio_session(
    dsns: SubstrateDSNs, token: str, log_path: Path, *, log_level: str = "INFO"
) -> AsyncIterator[Client]:
    """The official MCP client over stdio, spawning a gateway with ``KORA_SERVICE_TOKEN``."""
    params = StdioServerParameters(
        command=sys.executable,
        args=gateway_argv(dsns, "--governance-ttl", "0", "--log-level", log_level),
        env={"KORA_SERVICE_TOKEN": token},
    )
    with log_path.open("a") as errlog:
        async with Client(
            stdio_client(params, errlog=errlog), read_timeout_seconds=CLIENT_TIMEOUT_SECONDS
        ) as client:
            yield client


def stdio_gateways_of(token: str) -> list[psutil.Process]:
    """This process's gateway children started with ``token`` (stdio transport)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.environ().get("KORA_SERVICE_TOKEN") == token:
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill9_stdio_gateways(token: str) -> int:
    """``kill -9`` every stdio gateway started with ``token``; how many were killed."""
    killed = 0
    for proc in stdio_gateways_of(token):
        try:
            proc.kill()
            killed += 1
        except psutil.NoSuchProcess:
            continue
    return killed


# ------------------------------------------------------------------------- background loop


class LoopThread:
    """An event loop on a daemon thread, for synchronous (hypothesis) tests that drive MCP
    sessions: the sessions live on this loop, the test submits coroutines and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = HANG_GUARD_SECONDS) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class HeldSession:
    """An MCP client session owned by one task of a loop (anyio contexts must be entered and
    left by the same task), used from other tasks through :meth:`call`."""

    def __init__(self, connect: Any) -> None:
        self._connect = connect
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> HeldSession:
        self._task = asyncio.create_task(self._run())
        waiter = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            waiter.cancel()
            await self._task
        return self

    async def _run(self) -> None:
        async with self._connect() as client:
            self._client = client
            self._ready.set()
            await self._stop.wait()

    @property
    def client(self) -> Client:
        assert self._client is not None
        return self._client

    async def call(self, tool: str, arguments: Mapping[str, Any] | None) -> CallToolResult:
        return await self.client.call_tool(tool, dict(arguments) if arguments is not None else None)

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await self._task
            except Exception:  # noqa: BLE001 - a session that already broke is closed anyway
                pass
