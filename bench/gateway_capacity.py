"""The gateway's capacity over HTTP, and its stdio write latency beside the SDK's floor (issue 12).

**Capacity.** ``wrk`` (a C load generator; the Debian package ``wrk``) drives one HTTP gateway
process (``python -m isokron.gateway --transport http``, default settings, decision log at INFO)
with ``CAPACITY_CONNECTIONS`` (16) keep-alive connections from 2 threads, all writing
``kora__write_agent_scratchpad`` into **one** workspace with one token. Every request is a
self-contained JSON POST of the 2026-07-28 protocol (no ``initialize``, no session: ``MCP-
Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` headers and the ``_meta`` envelope), with a
bearer token and its own idempotency key (a Lua ``request()`` varies the body). After a warm-up
run, one timed run; the figure is **accepted writes/s** counted in the database (scratchpad rows
the workspace gained during the run, over wrk's own duration), not wrk's request rate; wrk's
non-2xx replies and socket errors are reported beside it (the count can exceed wrk's completed
requests by the few writes in flight when wrk stops: they commit, wrk does not count them).
CPU per write: the gateway process (psutil), every process of the embedded PostgreSQL server
(postmaster and its children; not measured with ``--dsn``), and wrk itself
(``RUSAGE_CHILDREN``), so it shows that the load generator is not what is measured.

The baseline, same wrk, same run: ``noop`` calls/s against the MCP SDK's own server with one
tool returning "ok" over the same transport (``bench/sdk_noop.py``), i.e. the ceiling the SDK
and uvicorn put on any tool before it does anything.

``wrk`` is installed the way the reference server is (``bench/reference_server.py``): when it
is not on the PATH and ``apt-get`` is usable (root, or passwordless sudo), the runner runs
``apt-get install -y wrk`` (after ``apt-get update`` if the first try fails); otherwise the
capacity figures are reported "not measured" with the reason.

What bounds the figure on a 2-core machine is CPU per write, which is why it is reported: at
1,000 writes/s the gateway process, every PostgreSQL process and wrk together have 2 ms of CPU
per write, and the gateway, one process on one event loop, at most 1 ms.

**stdio.** One client (the official MCP SDK client, ``ClientSession``) to a stdio gateway
(``kora__write_agent_scratchpad``) and to the SDK no-op server over stdio, timed in
``STDIO_ROUNDS`` interleaved blocks of sequential calls after warm-up; target: gateway write
p50 <= 2 x the no-op round trip p50.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import psutil
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from bench.config import Sizes
from bench.gateway_latency import SCRATCHPAD_TOOL, _cpu_seconds, _Series, _setup_workspace
from bench.mcp_clients import HttpGateway, free_port, isokron_stdio_session
from bench.report import Row, Section, Target, fmt
from bench.sdk_noop import NOOP_TOOL
from bench.substrate import BenchDatabase, BenchWorkspace

CAPACITY_CONNECTIONS = 16
WRK_THREADS = 2
FLOOR_WRITES_PER_SECOND = 1000.0
STDIO_RATIO_CEILING = 2.0
STDIO_ROUNDS = 6
MODERN_PROTOCOL = "2026-07-28"
STARTUP_TIMEOUT_SECONDS = 60.0
COUNT_SCRATCHPAD_SQL = """
SELECT count(*) FROM kronicle.agent_scratchpad_entries WHERE workspace_id = $1
"""
HEAD_SQL = """
SELECT coalesce(max(el.seq), 0)
FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
WHERE t.clerk_org_id = $1
"""

# One wrk script for both servers: each thread numbers its requests, so that every scratchpad
# write has its own idempotency key; done() prints the summary as one JSON line.
WRK_SCRIPT = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  prefix = os.time() .. "-" .. tid .. "-"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["MCP-Protocol-Version"] = "__PROTOCOL__"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = "__TOOL__"
  if "__TOKEN__" ~= "" then wrk.headers["Authorization"] = "Bearer __TOKEN__" end
end
function request()
  counter = counter + 1
  local key = prefix .. counter
  local body = string.gsub([[__BODY__]], "@KEY@", key)
  return wrk.format(nil, nil, nil, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class WrkUnavailable(RuntimeError):
    """wrk is not installed and could not be installed here."""


def ensure_wrk() -> str:
    """The path of ``wrk``, installing the Debian package with apt-get if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise WrkUnavailable("wrk is not installed and there is no apt-get to install it")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None or subprocess.run([sudo, "-n", "true"], check=False).returncode != 0:
            raise WrkUnavailable("wrk is not installed; apt-get needs root (no passwordless sudo)")
        prefix = [sudo, "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*prefix, apt, "install", "-y", "-q", "wrk"]
    done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        subprocess.run([*prefix, apt, "update", "-q"], capture_output=True, env=env, check=False)
        done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    found = shutil.which("wrk")
    if done.returncode != 0 or not found:
        raise WrkUnavailable(f"apt-get install wrk failed: {done.stderr.strip()[-300:]}")
    return found


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _modern_body(tool: str, arguments: dict[str, Any]) -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {
                "name": tool,
                "arguments": arguments,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN_PROTOCOL,
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            },
        },
        separators=(",", ":"),
    )


def write_script(path: Path, tool: str, arguments: dict[str, Any], token: str) -> Path:
    """The wrk Lua script for ``tool``; ``@KEY@`` in the arguments becomes a unique key."""
    text = (
        WRK_SCRIPT.replace("__PROTOCOL__", MODERN_PROTOCOL)
        .replace("__TOOL__", tool)
        .replace("__TOKEN__", token)
        .replace("__BODY__", _modern_body(tool, arguments))
    )
    path.write_text(text, encoding="utf-8")
    return path


def scratchpad_arguments() -> dict[str, Any]:
    """About 300 bytes of content, as in bench/gateway_latency.py, and a unique key."""
    return {
        "kind": "observation",
        "summary": "capacity run @KEY@",
        "content": (
            "Observed that the nightly export finished after the retention job; the runbook "
            "says retention must run last, so the order was swapped and noted for review. "
            "Item @KEY@: follow up with the operator tomorrow."
        ),
        "session_id": "bench-capacity",
        "idempotency_key": "@KEY@",
    }


def run_wrk(wrk: str, script: Path, url: str, seconds: float) -> dict[str, Any]:
    """One wrk run; its summary plus the CPU seconds wrk used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [
            wrk,
            f"-t{WRK_THREADS}",
            f"-c{CAPACITY_CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    out["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def postgres_processes(db: BenchDatabase) -> list[psutil.Process]:
    """The embedded server's postmaster and its children (empty for a server given by DSN)."""
    if db.data_dir is None:
        return []
    pid_file = db.data_dir / "pgdata" / "postmaster.pid"
    try:
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        return [postmaster, *postmaster.children(recursive=True)]
    except (OSError, ValueError, IndexError, psutil.Error):
        return []


@dataclass
class _Window:
    """What one timed wrk run did, measured around it."""

    wrk: dict[str, Any]
    seconds: float
    accepted: int
    events: int
    server_cpu_s: float
    postgres_cpu_s: float | None

    def summary(self) -> dict[str, Any]:
        n = max(self.accepted, 1)
        errors = sum(self.wrk[k] for k in ("connect", "read", "write", "status", "timeout"))
        return {
            "accepted": self.accepted,
            "events": self.events,
            "requests": self.wrk["requests"],
            "seconds": self.seconds,
            "accepted_per_s": self.accepted / self.seconds if self.seconds else float("nan"),
            "requests_per_s": self.wrk["requests"] / self.seconds if self.seconds else 0.0,
            "errors": errors,
            "non_2xx": self.wrk["status"],
            "p50_ms": self.wrk["p50_us"] / 1000,
            "p99_ms": self.wrk["p99_us"] / 1000,
            "server_cpu_ms": self.server_cpu_s / n * 1000,
            "postgres_cpu_ms": None
            if self.postgres_cpu_s is None
            else self.postgres_cpu_s / n * 1000,
            "wrk_cpu_ms": self.wrk["wrk_cpu_s"] / max(self.wrk["requests"], 1) * 1000,
        }


async def _counts(admin_dsn: str, ws: BenchWorkspace) -> tuple[int, int]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = int(await conn.fetchval(COUNT_SCRATCHPAD_SQL, ws.workspace_id))
        head = int(await conn.fetchval(HEAD_SQL, ws.workspace_id))
        return rows, head
    finally:
        await conn.close()


def _measure_gateway(
    db: BenchDatabase,
    ws: BenchWorkspace,
    wrk: str,
    script: Path,
    url: str,
    proc: psutil.Process,
    seconds: float,
) -> _Window:
    pg = postgres_processes(db)
    rows0, head0 = asyncio.run(_counts(db.dsns.admin, ws))
    server0, pg0 = _cpu_seconds([proc]), _cpu_seconds(pg)
    started = time.perf_counter()
    out = run_wrk(wrk, script, url, seconds)
    elapsed = time.perf_counter() - started
    server1, pg1 = _cpu_seconds([proc]), _cpu_seconds(pg)
    # Backends the gateway's pool opened during the run: all of their CPU time is the run's.
    known = {p.pid for p in pg}
    pg1 += _cpu_seconds([p for p in postgres_processes(db) if p.pid not in known])
    rows1, head1 = asyncio.run(_counts(db.dsns.admin, ws))
    return _Window(
        wrk=out,
        seconds=out["us"] / 1e6 or elapsed,
        accepted=rows1 - rows0,
        events=head1 - head0,
        server_cpu_s=server1 - server0,
        postgres_cpu_s=(pg1 - pg0) if pg else None,
    )


def _measure_noop(wrk: str, script: Path, url: str, proc: psutil.Process, seconds: float) -> Any:
    cpu0 = _cpu_seconds([proc])
    out = run_wrk(wrk, script, url, seconds)
    cpu1 = _cpu_seconds([proc])
    secs = out["us"] / 1e6
    n = max(out["requests"] - out["status"], 1)
    return {
        "calls_per_s": (out["requests"] - out["status"]) / secs if secs else float("nan"),
        "non_2xx": out["status"],
        "server_cpu_ms": (cpu1 - cpu0) / n * 1000,
        "wrk_cpu_ms": out["wrk_cpu_s"] / max(out["requests"], 1) * 1000,
        "p50_ms": out["p50_us"] / 1000,
    }


@contextmanager
def noop_http_server(errlog: IO[str]) -> Iterator[tuple[str, psutil.Process]]:
    """The SDK no-op server over HTTP, on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sdk_noop", "http", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=errlog,
        stderr=errlog,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the no-op server exited with {process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the no-op server did not listen in time") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _capacity(
    db: BenchDatabase, ws: BenchWorkspace, sizes: Sizes, tmp: Path, errlog: IO[str]
) -> dict[str, Any]:
    wrk = ensure_wrk()
    seconds = 3.0 if sizes.quick else 10.0
    warmup = 1.0 if sizes.quick else 3.0
    gw_script = write_script(tmp / "write.lua", SCRATCHPAD_TOOL, scratchpad_arguments(), ws.token)
    noop_script = write_script(tmp / "noop.lua", NOOP_TOOL, {}, "")
    out: dict[str, Any] = {"wrk": wrk_version(wrk)}
    with HttpGateway(db, errlog) as gateway, noop_http_server(errlog) as (noop_url, noop_proc):
        assert gateway.process is not None
        proc = psutil.Process(gateway.process.pid)
        run_wrk(wrk, gw_script, gateway.url, warmup)
        run_wrk(wrk, noop_script, noop_url, warmup)
        load_before = os.getloadavg()
        out["gateway"] = _measure_gateway(
            db, ws, wrk, gw_script, gateway.url, proc, seconds
        ).summary()
        out["noop"] = _measure_noop(wrk, noop_script, noop_url, noop_proc, seconds)
        out["loadavg"] = [load_before, os.getloadavg()]
    return out


async def _stdio(db: BenchDatabase, ws: BenchWorkspace, sizes: Sizes, errlog: IO[str]) -> Any:
    """Single-client write p50 over stdio beside the SDK's no-op round trip, interleaved."""
    from bench.gateway_latency import scratchpad_call

    samples = 60 if sizes.quick else 600
    per_round = -(-samples // STDIO_ROUNDS)
    async with AsyncExitStack() as stack:
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        session = await stack.enter_async_context(isokron_stdio_session(db, ws.token, errlog))
        gw_procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "bench.sdk_noop", "stdio"]
        )
        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        noop = await stack.enter_async_context(ClientSession(read, write))
        await noop.initialize()
        noop_procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        series = {
            "gateway": _Series(session, SCRATCHPAD_TOOL, scratchpad_call, gw_procs),
            "noop": _Series(noop, NOOP_TOOL, lambda _i: {}, noop_procs),
        }
        for one in series.values():
            await one.warm_up()
        for _ in range(STDIO_ROUNDS):
            for one in series.values():
                await one.block(per_round, 60.0, per_round)
        return {name: one.summary() for name, one in series.items()}


def run(db: BenchDatabase, sizes: Sizes) -> Section:
    """Accepted writes/s over HTTP under wrk, and stdio write p50 vs the SDK's no-op call."""
    section = Section("gateway capacity (wrk over HTTP; stdio vs the SDK's no-op)")
    ws = _setup_workspace(db)
    with tempfile.TemporaryDirectory(prefix="isokron-bench-cap-") as tmp_name:
        tmp = Path(tmp_name)
        with open(tmp / "servers.log", "w", encoding="utf-8") as errlog:
            try:
                section.data["capacity"] = _capacity(db, ws, sizes, tmp, errlog)
            except WrkUnavailable as exc:
                section.data["capacity_unavailable"] = str(exc)
            section.data["stdio"] = asyncio.run(_stdio(db, ws, sizes, errlog))
    _capacity_rows(section)
    _stdio_rows(section)
    return section


def _capacity_rows(section: Section) -> None:
    cap = section.data.get("capacity")
    name = (
        f"accepted writes/s over HTTP, {CAPACITY_CONNECTIONS} connections, 1 tenant "
        f">= {FLOOR_WRITES_PER_SECOND:,.0f}"
    )
    if cap is None:
        reason = section.data.get("capacity_unavailable", "not run")
        section.targets.append(Target(name, f"not measured: {reason}", ">= 1,000/s", None))
        return
    gw, noop = cap["gateway"], cap["noop"]
    pg = gw["postgres_cpu_ms"]
    section.rows += [
        Row(
            f"accepted scratchpad writes/s, wrk {CAPACITY_CONNECTIONS} connections, 1 tenant",
            gw["accepted_per_s"],
            "writes/s",
            noop["calls_per_s"],
            "SDK no-op tool calls/s, same wrk",
            f"{gw['accepted']} accepted of {gw['requests']} requests, {gw['errors']} wrk errors "
            f"({gw['non_2xx']} non-2xx); p50 {fmt(gw['p50_ms'])} ms, p99 {fmt(gw['p99_ms'])} ms",
        ),
        Row(
            "CPU per accepted write: gateway process",
            gw["server_cpu_ms"],
            "ms",
            noop["server_cpu_ms"],
            "SDK no-op server CPU per call",
        ),
        Row(
            "CPU per accepted write: PostgreSQL (all server processes)",
            float("nan") if pg is None else pg,
            "ms",
            note="not measured: server given by --dsn" if pg is None else "",
        ),
        Row(
            "CPU per request: wrk itself",
            gw["wrk_cpu_ms"],
            "ms",
            note=f"{cap['wrk']}; load average {cap['loadavg'][0][0]:.1f} before",
        ),
    ]
    rate = gw["accepted_per_s"]
    total = gw["server_cpu_ms"] + (pg or 0.0)
    section.targets.append(
        Target(
            name,
            f"{rate:,.0f} accepted writes/s ({gw['errors']} errors); CPU per write: gateway "
            f"{fmt(gw['server_cpu_ms'])} ms + PostgreSQL {fmt(pg)} ms = {fmt(total)} ms",
            ">= 1,000/s",
            rate >= FLOOR_WRITES_PER_SECOND and gw["errors"] == 0,
        )
    )


def _stdio_rows(section: Section) -> None:
    st = section.data["stdio"]
    gw, noop = st["gateway"], st["noop"]
    section.rows += [
        Row(
            "stdio single-client scratchpad write p50",
            gw["p50_ms"],
            "ms",
            noop["p50_ms"],
            "SDK no-op tool round trip p50, same client",
            f"p95 {fmt(gw['p95_ms'])} ms; CPU per call: gateway {fmt(gw['server_cpu_ms'])} ms, "
            f"no-op server {fmt(noop['server_cpu_ms'])} ms",
        ),
    ]
    ratio = gw["p50_ms"] / noop["p50_ms"]
    section.targets.append(
        Target(
            f"stdio write p50 <= {STDIO_RATIO_CEILING:g} x SDK no-op round trip (same run)",
            f"{fmt(gw['p50_ms'])} ms = {ratio:.2f} x {fmt(noop['p50_ms'])} ms",
            f"<= {STDIO_RATIO_CEILING:g} x",
            ratio <= STDIO_RATIO_CEILING,
        )
    )
