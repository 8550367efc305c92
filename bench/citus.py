"""Appends and verification on a Citus cluster, against a plain-PostgreSQL baseline in the same run.

``python -m bench.citus --dsn postgresql://postgres@COORDINATOR/DB [--baseline-dsn ...]``

``--dsn`` names an EMPTY database on a Citus coordinator that already has its workers
(``CREATE EXTENSION citus`` and ``citus_add_node`` on it; Citus 12.1 does not create databases
on the workers, see docs/scaling.md). The run migrates it (``isokron db upgrade``), distributes
it (``isokron db distribute``), seeds ``--workspaces`` workspaces, performs ``--appends``
``append_event`` writes from ``--concurrency`` concurrent connections spread over the
workspaces, then verifies every workspace (``isokron verify``'s code) and reports appends/s and
verified events/s. ``--baseline-dsn`` (an empty database on plain PostgreSQL, e.g. on the
coordinator's own server without the extension) runs the same workload undistributed.
Nothing is dropped: the databases are the caller's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import psycopg

from isokron.substrate import audit, citus, connection, writes
from isokron.substrate.migrate import upgrade

EVENT_TYPE = "bench.tick.recorded"
NODES_SQL = "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0"


@dataclass(frozen=True)
class Figures:
    """One target's results."""

    target: str
    citus_version: str | None
    workers: int
    workspaces: int
    appends: int
    concurrency: int
    appends_per_second: float
    verified_events: int
    verify_events_per_second: float
    all_verified: bool


def _prepare(dsn: str) -> tuple[str | None, int]:
    upgrade(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = citus.citus_version(conn)
        workers = int(conn.execute(NODES_SQL).fetchone()[0]) if version else 0  # type: ignore[index]
    if version:
        citus.distribute(dsn)
    return version, workers


async def _seed(pool: asyncpg.Pool, n: int, tag: str) -> list[tuple[str, Any]]:
    made = []
    for i in range(n):
        ws = f"bench-{tag}-{i}-{time.time_ns() % 1_000_000}"
        async with pool.acquire() as conn:
            created = await writes.create_workspace(conn, ws, ws)
        made.append((ws, created.actors["kora"]))
    return made


async def _append_all(
    pool: asyncpg.Pool, spaces: list[tuple[str, Any]], total: int, concurrency: int
) -> float:
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            ws, kora = spaces[i % len(spaces)]
            await writes.write(
                pool, "append_event", ws, kora, {"event_type": EVENT_TYPE, "payload": {"n": i}}
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


def _verify_all(dsn: str, spaces: list[tuple[str, Any]]) -> tuple[int, float, bool]:
    events = 0
    ok = True
    started = time.perf_counter()
    for ws, _ in spaces:
        result = audit.verify_workspace(dsn, ws)
        events += result.chain.events_checked
        ok = ok and result.ok
    return events, events / (time.perf_counter() - started), ok


async def run_target(
    label: str, dsn: str, *, workspaces: int, appends: int, concurrency: int
) -> Figures:
    version, workers = _prepare(dsn)
    pool = await connection.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    try:
        spaces = await _seed(pool, workspaces, label)
        rate = await _append_all(pool, spaces, appends, concurrency)
    finally:
        await pool.close()
    events, verify_rate, ok = _verify_all(dsn, spaces)
    return Figures(
        label,
        version,
        workers,
        workspaces,
        appends,
        concurrency,
        round(rate, 1),
        events,
        round(verify_rate, 1),
        ok,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.citus", description=__doc__)
    parser.add_argument("--dsn", required=True, help="empty database on a Citus coordinator")
    parser.add_argument("--baseline-dsn", help="empty database on plain PostgreSQL")
    parser.add_argument("--workspaces", type=int, default=8)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets = [("citus", args.dsn)] + (
        [("baseline", args.baseline_dsn)] if args.baseline_dsn else []
    )
    results = [
        asyncio.run(
            run_target(
                label,
                dsn,
                workspaces=args.workspaces,
                appends=args.appends,
                concurrency=args.concurrency,
            )
        )
        for label, dsn in targets
    ]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    for r in results:
        print(
            f"[bench.citus] {r.target}: citus={r.citus_version or '-'} workers={r.workers} "
            f"appends/s={r.appends_per_second} ({r.appends} appends, {r.concurrency} connections, "
            f"{r.workspaces} workspaces) verify events/s={r.verify_events_per_second} "
            f"({r.verified_events} events, ok={r.all_verified})",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0 if all(r.all_verified for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
