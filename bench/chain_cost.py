"""Chain cost: what the hash chain costs on write, and how fast it verifies.

Appends: ``writes.write_with_token(pool, "append_event", ...)`` through the gateway role, from
``chain_concurrency`` connections at once, first all into one tenant (appends serialize on the
tenant's chain head) and then one connection per tenant. Baseline: a plain INSERT of the same
rows (copied from the appends) into a table with the same columns, keys and index but no
hashing, no trigger and no governance, with the same concurrency. The three runs are
interleaved in short slices so that other load on the machine hits them alike.

Verification and export are measured in :mod:`bench.verification`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from bench.config import Sizes
from bench.report import Row, Section, Target, fmt
from bench.stats import rate
from bench.substrate import BenchDatabase, BenchWorkspace, create_bench_workspace
from isokron.substrate import connection, writes

PLAIN_TABLE = "bench_plain_event_log"
CREATE_PLAIN_TABLE_SQL = f"""
CREATE TABLE IF NOT EXISTS public.{PLAIN_TABLE} (
    LIKE hivex_foundation.event_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, event_id)
);
CREATE INDEX IF NOT EXISTS {PLAIN_TABLE}_recent
    ON public.{PLAIN_TABLE} (tenant_id, occurred_at DESC);
"""
INSERT_PLAIN_SQL = (
    f"INSERT INTO public.{PLAIN_TABLE} VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
)
SELECT_APPENDED_SQL = """
SELECT e.tenant_id, e.seq, e.event_id, e.actor_id, e.event_type, e.payload, e.payload_digest,
       e.payload_erased, e.occurred_at, e.prev_event_hash, e.this_event_hash, e.workspace_id
FROM hivex_foundation.event_log e
JOIN unnest($1::uuid[], $2::bigint[]) AS k(tenant_id, seq)
  ON e.tenant_id = k.tenant_id AND e.seq = k.seq
"""
APPEND_EVENT_TYPE = "kora.bench.appended"
ROUNDS = 4
APPEND_ARGS: dict[str, Any] = {
    "event_type": APPEND_EVENT_TYPE,
    "payload": {"note": "appended by the chain-cost benchmark " + "x" * 160, "n": 1},
}


async def _append_run(
    pool: asyncpg.Pool, targets: list[BenchWorkspace], seconds: float
) -> tuple[list[tuple[Any, int]], float]:
    """Each of len(targets) workers appends into its workspace until time is up.

    Returns the (tenant, seq) of every event appended, and the elapsed time.
    """
    appended: list[tuple[Any, int]] = []
    end = time.perf_counter() + seconds

    async def worker(ws: BenchWorkspace) -> None:
        while time.perf_counter() < end:
            result = await writes.write_with_token(
                pool, "append_event", writes.token_sha256(ws.token), APPEND_ARGS
            )
            appended.append((ws.tenant_id, int(result["seq"])))

    start = time.perf_counter()
    await asyncio.gather(*(worker(ws) for ws in targets))
    return appended, time.perf_counter() - start


async def _plain_run(pool: asyncpg.Pool, rows: list[asyncpg.Record], concurrency: int) -> float:
    """INSERT every row, one statement each (autocommit), from ``concurrency`` connections."""
    it = iter(rows)

    async def worker() -> None:
        async with pool.acquire() as conn:
            for row in it:
                await conn.execute(INSERT_PLAIN_SQL, *row)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def _appends(db: BenchDatabase, sizes: Sizes) -> dict[str, Any]:
    """Appends into 1 tenant, into N tenants, and the plain INSERT of the same rows.

    The three runs are interleaved in ``ROUNDS`` short slices (1 tenant, N tenants, plain
    INSERT of the rows the two slices just appended), so that a change of load on the machine
    during the run affects all three alike.
    """
    conc = sizes.chain_concurrency
    admin = await connection.connect(db.dsns.admin)
    try:
        tenants = [
            await create_bench_workspace(admin, f"chain{i}") for i in range(sizes.chain_tenants)
        ]
        await admin.execute(CREATE_PLAIN_TABLE_SQL)
    finally:
        await admin.close()
    one = tenants[:1] * conc
    spread = [tenants[i % len(tenants)] for i in range(conc)]
    slice_s = sizes.chain_seconds / ROUNDS
    totals = {"one": [0, 0.0], "many": [0, 0.0], "plain": [0, 0.0]}
    gw = await connection.create_pool(db.dsns.gateway, min_size=conc, max_size=conc)
    owner = await connection.create_pool(db.dsns.admin, min_size=conc, max_size=conc)
    try:
        await _append_run(gw, one, 0.3)  # warm connections and plans (not timed)
        for _ in range(ROUNDS):
            keys: list[tuple[Any, int]] = []
            for name, targets in (("one", one), ("many", spread)):
                appended, elapsed = await _append_run(gw, targets, slice_s)
                totals[name][0] += len(appended)
                totals[name][1] += elapsed
                keys += appended
            rows = await owner.fetch(
                SELECT_APPENDED_SQL, [k[0] for k in keys], [k[1] for k in keys]
            )
            totals["plain"][0] += len(rows)
            totals["plain"][1] += await _plain_run(owner, list(rows), conc)
    finally:
        await gw.close()
        await owner.close()

    def fig(name: str) -> dict[str, Any]:
        n, secs = totals[name]
        return {"count": n, "seconds": secs, "per_s": rate(int(n), float(secs))}

    return {
        "concurrency": conc,
        "rounds": ROUNDS,
        "one_tenant": fig("one"),
        "tenants": len(tenants),
        "many_tenants": fig("many"),
        "plain_insert": fig("plain"),
    }


def run(db: BenchDatabase, sizes: Sizes) -> Section:
    """Run the chain-cost benchmarks and return their section."""
    section = Section("chain cost (appends)")
    ap = asyncio.run(_appends(db, sizes))
    section.data = {"appends": ap}
    plain = ap["plain_insert"]["per_s"]
    conc = ap["concurrency"]
    section.rows += [
        Row(
            f"chain appends/s, 1 tenant, {conc} connections",
            ap["one_tenant"]["per_s"],
            "ops/s",
            plain,
            f"plain INSERT, {conc} connections",
        ),
        Row(
            f"chain appends/s, {ap['tenants']} tenants, {conc} connections",
            ap["many_tenants"]["per_s"],
            "ops/s",
            plain,
            f"plain INSERT, {conc} connections",
        ),
        Row(f"plain INSERT rows/s, {conc} connections", plain, "rows/s"),
    ]
    for label, key in (("1 tenant", "one_tenant"), (f"{ap['tenants']} tenants", "many_tenants")):
        value = ap[key]["per_s"]
        section.targets.append(
            Target(
                f"chain appends/s ({label}) >= 0.5 x plain INSERT rows/s",
                f"{fmt(value)}/s = {value / plain:.2f} x {fmt(plain)}/s",
                ">= 0.50 x",
                value >= 0.5 * plain,
            )
        )
    return section
