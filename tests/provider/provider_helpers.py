"""Helpers shared by the provider tests (imported as ``provider_helpers``).

Workspaces with Kora tokens, provider configs, chain reads and verification, and an HTTP
gateway process, all against the real substrate of ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from isokron.chain import verify_records
from isokron.governance.seeds import default_seed
from isokron.provider import IsoKronProviderConfig
from isokron.substrate import reads, writes
from isokron.substrate.audit import iter_chain, verify_workspace
from isokron.substrate.connection import connect
from isokron.substrate.dsn import SubstrateDSNs

EVENTS_SQL = """
SELECT el.seq, el.event_type, el.payload, a.actor_kind
FROM hivex_foundation.event_log el
LEFT JOIN public.actor_registry a ON a.workspace_id = el.workspace_id AND a.actor_id = el.actor_id
WHERE el.workspace_id = $1
ORDER BY el.seq
"""
ENTRIES_SQL = """
SELECT entry_id, kind, visibility_scope, summary, content, session_id, content_hash
FROM kronicle.agent_scratchpad_entries WHERE workspace_id = $1 ORDER BY created_at
"""


@dataclass(frozen=True)
class KoraWorkspace:
    """A seeded workspace with a service token issued to its Kora actor."""

    workspace_id: str
    token: str
    operator_id: uuid.UUID
    kora_id: uuid.UUID


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def create_kora_workspace(admin: str, prefix: str = "prov") -> KoraWorkspace:
    """A new seeded workspace and a Kora token for it."""
    return _run(_create(admin, prefix))


async def _create(admin: str, prefix: str) -> KoraWorkspace:
    conn = await connect(admin)
    try:
        ws_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
        created = await writes.create_workspace(
            conn, ws_id, f"Provider test {ws_id}", seed=default_seed()
        )
        kora = created.actors["kora"]
        issued = await writes.issue_token(
            conn, ws_id, created.operator_actor_id, kora, label="provider tests"
        )
        return KoraWorkspace(ws_id, issued.token, created.operator_actor_id, kora)
    finally:
        await conn.close()


def provider_config(
    dsns: SubstrateDSNs, ws: KoraWorkspace, **overrides: Any
) -> IsoKronProviderConfig:
    values: dict[str, Any] = {
        "reader_dsn": dsns.reader,
        "gateway_dsn": dsns.gateway,
        "mcp_endpoint": "stdio",
        "workspace_id": ws.workspace_id,
        "service_token": ws.token,
    }
    values.update(overrides)
    return IsoKronProviderConfig.model_validate(values)


def chain_events(admin: str, workspace_id: str) -> list[dict[str, Any]]:
    """Every chain event of a workspace, oldest first: seq, event_type, payload, actor_kind."""

    async def fetch() -> list[dict[str, Any]]:
        conn = await connect(admin)
        try:
            async with reads.scoped(conn, workspace_id) as c:
                return [dict(r) for r in await c.fetch(EVENTS_SQL, workspace_id)]
        finally:
            await conn.close()

    return _run(fetch())


def scratchpad_rows(admin: str, workspace_id: str) -> list[dict[str, Any]]:
    """Every scratchpad entry of a workspace, oldest first."""

    async def fetch() -> list[dict[str, Any]]:
        conn = await connect(admin)
        try:
            async with reads.scoped(conn, workspace_id) as c:
                return [dict(r) for r in await c.fetch(ENTRIES_SQL, workspace_id)]
        finally:
            await conn.close()

    return _run(fetch())


def assert_chain_verifies(admin: str, workspace_id: str) -> int:
    """Verify the workspace (chain + what it vouches for) twice over: through the substrate's
    audit and through the pure verifier on an export of the rows. Returns the event count."""
    audit = verify_workspace(admin, workspace_id)
    assert audit.ok, audit.to_dict()
    import psycopg

    with psycopg.connect(admin) as conn, conn.transaction():
        conn.execute(
            "SELECT isokron.set_local('app.current_workspace_id', %s, true)", (workspace_id,)
        )
        tenant = conn.execute(
            "SELECT tenant_id FROM hivex_foundation.tenant WHERE clerk_org_id = %s", (workspace_id,)
        ).fetchone()[0]
        report = verify_records(
            iter_chain(conn, tenant, workspace_id=workspace_id, with_payloads=True),
            expected_tenant=tenant,
        )
    assert report.ok, report.to_dict()
    assert report.events_checked == audit.chain.events_checked
    return report.events_checked


def payload(event: dict[str, Any]) -> dict[str, Any]:
    value = event["payload"]
    return json.loads(value) if isinstance(value, str) else value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HttpGateway:
    url: str
    port: int
    process: subprocess.Popen[bytes]


def start_http_gateway(dsns: SubstrateDSNs, port: int, *, timeout: float = 30.0) -> HttpGateway:
    """Start ``python -m isokron.gateway --transport http`` and wait until /healthz answers."""
    import httpx

    env = dict(os.environ, ISOKRON_READER_DSN=dsns.reader, ISOKRON_GATEWAY_DSN=dsns.gateway)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "isokron.gateway",
            "--transport",
            "http",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the HTTP gateway exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return HttpGateway(f"http://127.0.0.1:{port}/mcp", port, process)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the HTTP gateway did not become healthy")


def stop_http_gateway(gateway: HttpGateway) -> None:
    gateway.process.terminate()
    try:
        gateway.process.wait(10)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait(10)


def tagged(
    caplog: pytest.LogCaptureFixture, tag: str, level: int | None = None
) -> list[logging.LogRecord]:
    """Log records whose message contains ``tag`` (at ``level`` if given)."""
    return [
        r for r in caplog.records if tag in r.getMessage() and (level is None or r.levelno == level)
    ]


def admin_execute(admin: str, workspace_id: str, sql: str, *args: Any) -> str:
    """Run one statement as the admin (superuser) inside the workspace's scope — used to
    simulate what the system must detect (tampering), never to write what the gateway writes."""

    async def run() -> str:
        conn = await connect(admin)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT isokron.set_local('app.current_workspace_id', $1, true)", workspace_id
                )
                return await conn.execute(sql, *args)
        finally:
            await conn.close()

    return _run(run())


def govern(admin: str, ws: KoraWorkspace, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """A chained governance operation by the workspace's operator (as the CLI does)."""

    async def run() -> dict[str, Any]:
        conn = await connect(admin)
        try:
            return await writes.govern(conn, op, ws.workspace_id, ws.operator_id, args)
        finally:
            await conn.close()

    return _run(run())


class TcpProxy:
    """A TCP listener on 127.0.0.1 that forwards to PostgreSQL; ``stop()``/``start()`` take the
    database away from whoever connects through it, and bring it back, on the same port;
    ``freeze()``/``thaw()`` hold every byte in both directions (connections stay open, nothing
    answers: a hung server) and then let them through."""

    def __init__(self, dsn: str) -> None:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(dsn)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        self._upstream: tuple[str, int] | str
        if socket_dir:
            self._upstream = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}"
        else:
            self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = free_port()
        user = parts.username or "postgres"
        self.dsn = f"postgresql://{user}@127.0.0.1:{self.port}{parts.path}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self._upstream, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(self._upstream)
        return s

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Close the listener and every forwarded connection (the server 'goes away')."""
        if self._listener is not None:
            # shutdown() wakes the accept() blocked in _accept; close() alone leaves it waiting on
            # the open socket, and the first connection after stop() would still get through.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def freeze(self) -> None:
        """Hold what is sent either way from now on (until :meth:`thaw`)."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward what was held, and everything after it."""
        self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
