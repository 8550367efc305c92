"""Chain cost: what the hash chain costs on write.

Appends: the gateway's write path (``group_writes.GroupWriter`` over a gateway-role pool of
``chain_concurrency`` connections, opened as the gateway opens its own, without a session reset
on release; admission against the append's quotas, then the write, in groups of one workspace's
concurrent calls), first ``chain_concurrency`` callers all into one
tenant and then the same number spread over ``chain_tenants`` tenants; then, labelled as such,
``WIDE_CALLERS`` callers over the same tenants and connections. Baseline: a plain INSERT of the
same rows (copied from the appends) into a table with the same columns, keys and index but no
hashing, no trigger and no governance, one autocommit statement per row from the same number of
connections. The runs are interleaved in short slices so that other load on the machine hits
them alike.

Verification and export are measured in :mod:`bench.verification`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg
import psutil

from bench.config import Sizes
from bench.report import Row, Section, Target, fmt
from bench.stats import rate
from bench.substrate import BenchDatabase, BenchWorkspace, create_bench_workspace
from isokron.governance.operations import quotas_for
from isokron.substrate import connection, writes
from isokron.substrate.group_writes import GroupWriter

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
# The quotas the gateway counts an append_event call against, with the bench workspaces' lifted
# limits (bench.substrate.UNLIMITED_POLICIES): counted, never refusing.
APPEND_QUOTAS = [
    {"bucket": q.bucket, "limit": 1_000_000_000, "window_seconds": q.window_seconds, "code": q.code}
    for q in quotas_for("append_event", APPEND_EVENT_TYPE)
]
APPEND_DENIAL = {"tool": "kora__append_event", "code": "rate_limited", "reason": "bench"}
#: Callers of the extra run with more concurrent callers than connections.
WIDE_CALLERS = 32


async def _append_run(
    writer: GroupWriter, targets: list[BenchWorkspace], seconds: float
) -> tuple[list[tuple[Any, int]], float]:
    """Each of len(targets) callers appends into its workspace through ``writer`` until time
    is up (one call at a time per caller, as an agent does).

    Returns the (tenant, seq) of every event appended, and the elapsed time.
    """
    appended: list[tuple[Any, int]] = []
    end = time.perf_counter() + seconds

    async def caller(ws: BenchWorkspace) -> None:
        digest = writes.token_sha256(ws.token)
        while time.perf_counter() < end:
            done = await writer.submit(
                workspace_id=ws.workspace_id,
                token_sha256=digest,
                quotas=APPEND_QUOTAS,
                op="append_event",
                args=APPEND_ARGS,
                idempotency_key=None,
                over_limit_denial=APPEND_DENIAL,
            )
            assert done.allowed and done.result is not None, done
            appended.append((ws.tenant_id, int(done.result["seq"])))

    start = time.perf_counter()
    await asyncio.gather(*(caller(ws) for ws in targets))
    return appended, time.perf_counter() - start


def _processes(db: BenchDatabase) -> list[psutil.Process]:
    """This process and the PostgreSQL backends serving the bench database (their titles name
    it): whose CPU time a run is charged."""
    found = [psutil.Process()]
    for p in psutil.process_iter():
        try:
            if p.name().startswith("postgres") and db.name in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


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
    """Appends into 1 tenant, into N tenants (and WIDE_CALLERS callers over the N tenants),
    and the plain INSERT of the same rows.

    The runs are interleaved in ``ROUNDS`` short slices (1 tenant, N tenants, wide, plain
    INSERT of the rows the slices just appended), so that a change of load on the machine
    during the run affects all alike. Group sizes are counted per run.
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
    runs = {
        "one": tenants[:1] * conc,
        "many": [tenants[i % len(tenants)] for i in range(conc)],
        "wide": [tenants[i % len(tenants)] for i in range(WIDE_CALLERS)],
    }
    slice_s = sizes.chain_seconds / ROUNDS
    totals = {"one": [0, 0.0], "many": [0, 0.0], "wide": [0, 0.0], "plain": [0, 0.0]}
    cpu = dict.fromkeys(totals, 0.0)  # CPU seconds of this process and the database's backends
    groups: dict[str, Counter[int]] = {name: Counter() for name in runs}
    # As gateway.server.open_gateway opens its pool: the gateway's connections carry no session
    # state, so a released one is not reset (asyncpg's reset is a round trip per group).
    gw = await connection.create_pool(
        db.dsns.gateway, min_size=conc, max_size=conc, session_state=False
    )
    owner = await connection.create_pool(db.dsns.admin, min_size=conc, max_size=conc)
    writer = GroupWriter(gw)
    try:
        await _append_run(writer, runs["many"], 0.3)  # warm connections and plans (not timed)
        procs = _processes(db)
        for _ in range(ROUNDS):
            keys: list[tuple[Any, int]] = []
            for name, targets in runs.items():
                before = Counter(writer.stats.sizes)
                cpu_before = _cpu_seconds(procs)
                appended, elapsed = await _append_run(writer, targets, slice_s)
                cpu[name] += _cpu_seconds(procs) - cpu_before
                groups[name] += writer.stats.sizes - before
                totals[name][0] += len(appended)
                totals[name][1] += elapsed
                keys += appended
            rows = await owner.fetch(
                SELECT_APPENDED_SQL, [k[0] for k in keys], [k[1] for k in keys]
            )
            totals["plain"][0] += len(rows)
            cpu_before = _cpu_seconds(procs)
            totals["plain"][1] += await _plain_run(owner, list(rows), conc)
            cpu["plain"] += _cpu_seconds(procs) - cpu_before
    finally:
        await gw.close()
        await owner.close()

    def fig(name: str) -> dict[str, Any]:
        n, secs = totals[name]
        found: dict[str, Any] = {"count": n, "seconds": secs, "per_s": rate(int(n), float(secs))}
        found["cpu_us_per_op"] = cpu[name] / n * 1e6 if n else None
        if name in groups:
            count = sum(groups[name].values())
            found["groups"] = count
            found["mean_group"] = n / count if count else 0.0
            found["max_group"] = max(groups[name], default=0)
        return found

    return {
        "concurrency": conc,
        "rounds": ROUNDS,
        "one_tenant": fig("one"),
        "tenants": len(tenants),
        "many_tenants": fig("many"),
        "wide_callers": WIDE_CALLERS,
        "wide": fig("wide"),
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
            f"chain appends/s, 1 tenant, {conc} callers, {conc} connections",
            ap["one_tenant"]["per_s"],
            "ops/s",
            plain,
            f"plain INSERT, {conc} connections; groups of "
            f"{ap['one_tenant']['mean_group']:.1f} calls on average",
        ),
        Row(
            f"chain appends/s, {ap['tenants']} tenants, {conc} callers, {conc} connections",
            ap["many_tenants"]["per_s"],
            "ops/s",
            plain,
            f"plain INSERT, {conc} connections; groups of "
            f"{ap['many_tenants']['mean_group']:.1f} calls on average",
        ),
        Row(
            f"  {ap['wide_callers']} callers over {ap['tenants']} tenants, {conc} connections",
            ap["wide"]["per_s"],
            "ops/s",
            plain,
            f"plain INSERT, {conc} connections; more callers than connections, groups of "
            f"{ap['wide']['mean_group']:.1f} calls on average",
        ),
        Row(f"plain INSERT rows/s, {conc} connections", plain, "rows/s"),
        *(
            Row(
                f"  CPU per {what} (this process + PostgreSQL backends)",
                ap[key]["cpu_us_per_op"],
                "µs",
                ap["plain_insert"]["cpu_us_per_op"],
                "CPU per plain INSERT row",
            )
            for what, key in (
                ("append, 1 tenant", "one_tenant"),
                (f"append, {ap['tenants']} tenants", "many_tenants"),
                (f"append, {ap['wide_callers']} callers", "wide"),
            )
        ),
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
