"""Where a gateway write's time goes: ``python -m bench.profile_write`` (not part of the run).

Two views that stay meaningful on a busy machine, because they count CPU, not wall time:

1. Inside PostgreSQL: ``pg_stat_user_functions`` (``track_functions = all``) over serial
   ``writes.write_with_token(..., "append_event", ...)`` calls: self time per substrate
   function, per write.
2. Per MCP call: CPU seconds of the client (this process), the server process and the
   database's backends, per ``kora__write_agent_scratchpad`` call over stdio and HTTP, and per
   reference ``create_entities`` call (psutil ``cpu_times`` deltas).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench import reference_server as ref
from bench.chain_cost import APPEND_ARGS
from bench.gateway_latency import (
    REFERENCE_TOOL,
    SCRATCHPAD_TOOL,
    _setup_workspace,
    _text,
    reference_call,
    scratchpad_call,
)
from bench.mcp_clients import (
    HttpGateway,
    call,
    isokron_http_session,
    isokron_stdio_session,
    reference_session,
)
from bench.memory import children_matching
from bench.substrate import BenchDatabase, BenchWorkspace, bench_database
from isokron.substrate import connection, writes

FUNCTION_STATS_SQL = """
SELECT schemaname || '.' || funcname, calls, total_time, self_time
FROM pg_stat_user_functions ORDER BY self_time DESC
"""


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _backends(db: BenchDatabase) -> list[psutil.Process]:
    """The PostgreSQL backends serving the bench database (their titles name it)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.name().startswith("postgres") and db.name in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


async def substrate_functions(db: BenchDatabase, ws: BenchWorkspace, n: int) -> None:
    """Print self time per substrate function, per append_event write."""
    with psycopg.connect(db.dsns.admin, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{db.name}\" SET track_functions = 'all'")
    pool = await connection.create_pool(db.dsns.gateway, min_size=1, max_size=1)
    digest = writes.token_sha256(ws.token)
    try:
        async with pool.acquire() as c:
            for _ in range(100):
                await writes.write_with_token(c, "append_event", digest, APPEND_ARGS)
            await c.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(1.2)  # let the warm-up's statistics land before the reset
        with psycopg.connect(db.dsns.admin, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_reset()")
        async with pool.acquire() as c:
            start = time.perf_counter()
            for _ in range(n):
                await writes.write_with_token(c, "append_event", digest, APPEND_ARGS)
            wall = time.perf_counter() - start
            await c.execute("SELECT pg_stat_force_next_flush()")
    finally:
        await pool.close()
    await asyncio.sleep(0.7)
    with psycopg.connect(db.dsns.admin) as conn:
        rows = conn.execute(FUNCTION_STATS_SQL).fetchall()
    print(f"\n{n} serial append_event writes: {wall / n * 1e6:.0f} µs each (client wall time)")
    print(f"{'function':<44} {'calls/write':>11} {'self µs/write':>14} {'total µs/write':>15}")
    for name, calls, total, self_ms in rows:
        print(
            f"{name:<44} {calls / n:>11.2f} {self_ms * 1000 / n:>14.1f} {total * 1000 / n:>15.1f}"
        )


async def _cpu_per_call(
    label: str,
    session: Any,
    tool: str,
    make: Callable[[int], dict[str, Any]],
    server: Callable[[], list[psutil.Process]],
    db: BenchDatabase,
    n: int,
) -> None:
    for i in range(10):
        await call(session, tool, make(i))
    me = psutil.Process()
    procs = server()
    pg = _backends(db)
    c0, s0, p0 = _cpu([me]), _cpu(procs), _cpu(pg)
    start = time.perf_counter()
    for i in range(n):
        await call(session, tool, make(100_000 + i))
    wall = time.perf_counter() - start
    c1, s1, p1 = _cpu([me]), _cpu(procs), _cpu(pg)
    print(
        f"{label:<38} {wall / n * 1e3:>8.2f} {(c1 - c0) / n * 1e3:>11.2f} "
        f"{(s1 - s0) / n * 1e3:>11.2f} {(p1 - p0) / n * 1e3:>13.2f}"
    )


async def cpu_split(db: BenchDatabase, ws: BenchWorkspace, n: int) -> None:
    """Print wall time and CPU per call of client, server and PostgreSQL."""
    entry = ref.ensure_installed()
    with tempfile.TemporaryDirectory() as tmp:
        memory = Path(tmp) / "memory.jsonl"
        ref.write_memory_file(memory, [ref.entity(f"pre-{i}", _text(i)) for i in range(1000)])
        log_path = Path(tmp) / "servers.log"
        with open(log_path, "w", encoding="utf-8") as log, HttpGateway(db, log) as http:
            print(f"\n{n} sequential calls each; milliseconds per call")
            print(
                f"{'':<38} {'wall':>8} {'client CPU':>11} {'server CPU':>11} {'postgres CPU':>13}"
            )
            async with isokron_stdio_session(db, ws.token, log) as s:
                await _cpu_per_call(
                    "IsoKron stdio scratchpad write",
                    s,
                    SCRATCHPAD_TOOL,
                    scratchpad_call,
                    children_matching("--transport stdio"),
                    db,
                    n,
                )
            assert http.process is not None
            gateway = psutil.Process(http.process.pid)
            async with isokron_http_session(http.url, ws.token) as s:
                await _cpu_per_call(
                    "IsoKron HTTP scratchpad write",
                    s,
                    SCRATCHPAD_TOOL,
                    scratchpad_call,
                    lambda: [gateway],
                    db,
                    n,
                )
            async with reference_session(entry, memory, log) as s:
                await _cpu_per_call(
                    "reference create_entities (1k stored)",
                    s,
                    REFERENCE_TOOL,
                    reference_call,
                    children_matching("server-memory"),
                    db,
                    n,
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_write")
    parser.add_argument("--dsn", help="admin DSN instead of the embedded server")
    parser.add_argument("-n", type=int, default=2000, help="writes per measurement")
    args = parser.parse_args(argv)
    with bench_database(args.dsn) as db:
        asyncio.run(substrate_functions(db, _setup_workspace(db), args.n))
        asyncio.run(cpu_split(db, _setup_workspace(db), max(args.n // 5, 100)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
