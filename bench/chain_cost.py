"""Chain cost: what the hash chain costs on write, and how fast it verifies.

Appends: the gateway's write path (``group_writes.GroupWriter`` over a gateway-role pool of
``chain_concurrency`` connections: admission against the append's quotas, then the write, in
groups of one workspace's concurrent calls), first ``chain_concurrency`` callers all into one
tenant and then the same number spread over ``chain_tenants`` tenants; then, labelled as such,
``WIDE_CALLERS`` callers over the same tenants and connections. Baseline: a plain INSERT of the
same rows (copied from the appends) into a table with the same columns, keys and index but no
hashing, no trigger and no governance, one autocommit statement per row from the same number of
connections. The runs are interleaved in short slices so that other load on the machine hits
them alike.

Verify: one workspace's chain (half ``append_event``, half scratchpad entries) is verified from
the database (``audit.verify_workspace``) and from an export file (``chain.verify_bundle`` on
``audit.export_workspace``'s output), beside a bare SHA-256 walk over the exact hash-input
bytes of every event, precomputed in memory: the physical limit of any verifier.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import psycopg

from bench.config import Sizes
from bench.preload import event_item, preload, scratchpad_item
from bench.report import Row, Section, Target, fmt
from bench.stats import rate
from bench.substrate import BenchDatabase, BenchWorkspace, create_bench_workspace
from isokron.chain import record_hash_input, verify_bundle, verify_records
from isokron.governance.operations import quotas_for
from isokron.substrate import audit, connection, writes
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
    gw = await connection.create_pool(db.dsns.gateway, min_size=conc, max_size=conc)
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


async def _build_chain(db: BenchDatabase, events: int) -> BenchWorkspace:
    admin = await connection.connect(db.dsns.admin)
    try:
        ws = await create_bench_workspace(admin, "verify")
    finally:
        await admin.close()
    pool = await connection.create_pool(db.dsns.gateway, min_size=1, max_size=2)
    try:
        half = events // 2
        await preload(pool, ws.workspace_id, ws.token, "append_event", event_item, half)
        await preload(
            pool,
            ws.workspace_id,
            ws.token,
            "write_scratchpad_entry",
            scratchpad_item,
            events - half,
        )
    finally:
        await pool.close()
    return ws


def _best_of(n: int, fn: Any) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(n):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _verify(db: BenchDatabase, ws: BenchWorkspace) -> dict[str, Any]:
    admin = db.dsns.admin
    repeats = 3
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = audit.verify_workspace(admin, ws.workspace_id)
        runs.append((time.perf_counter() - start, result))
    assert all(r.ok for _, r in runs), runs[0][1].to_dict()
    events = runs[0][1].chain.events_checked
    db_s = min(s for s, _ in runs)
    chain_s = min(r.chain_seconds for _, r in runs)  # the in-database chain check alone
    rows_s = min(r.rows_seconds for _, r in runs)  # row and state checks, timed separately

    # The previous path, as a baseline in the same run: stream every row into Python and
    # re-hash it there (audit.iter_chain + chain.verify_records).
    def python_walk() -> int:
        with psycopg.connect(admin) as conn, conn.transaction():
            tenant = audit._tenant_of(conn, ws.workspace_id)
            return verify_records(
                audit.iter_chain(conn, tenant, workspace_id=ws.workspace_id, with_payloads=False),
                expected_tenant=tenant,
            ).events_checked

    python_s, _ = _best_of(repeats, python_walk)

    with tempfile.TemporaryDirectory(prefix="isokron-bench-") as tmp:
        path = Path(tmp) / "chain.jsonl"
        export_start = time.perf_counter()
        audit.export_workspace(admin, ws.workspace_id, path)
        export_s = time.perf_counter() - export_start
        bundle_s, report = _best_of(repeats, lambda: verify_bundle(path))
        assert report.ok, report.to_dict()
        size = path.stat().st_size

    # The physical limit: SHA-256 over the exact hash-input bytes, already in memory.
    with psycopg.connect(admin) as conn, conn.transaction():
        tenant = audit._tenant_of(conn, ws.workspace_id)
        records = audit.iter_chain(conn, tenant, workspace_id=ws.workspace_id, with_payloads=False)
        inputs = [record_hash_input(r) for r in records]
    sha256 = hashlib.sha256

    def bare() -> None:
        for b in inputs:
            sha256(b).digest()

    bare_s, _ = _best_of(repeats, bare)
    return {
        "events": events,
        "from_database": {"seconds": chain_s, "per_s": rate(events, chain_s)},
        "whole_verify": {"seconds": db_s, "per_s": rate(events, db_s)},
        "row_checks": {"seconds": rows_s, "rows": runs[0][1].rows_checked},
        "python_walk": {"seconds": python_s, "per_s": rate(events, python_s)},
        "export": {"seconds": export_s, "bytes": size, "per_s": rate(events, export_s)},
        "from_bundle": {"seconds": bundle_s, "per_s": rate(events, bundle_s)},
        "bare_sha256": {"seconds": bare_s, "per_s": rate(events, bare_s)},
    }


def run(db: BenchDatabase, sizes: Sizes) -> Section:
    """Run the chain-cost benchmarks and return their section."""
    section = Section("chain cost (appends and verification)")
    ap = asyncio.run(_appends(db, sizes))
    ws = asyncio.run(_build_chain(db, sizes.verify_events))
    vf = _verify(db, ws)
    section.data = {"appends": ap, "verify": vf}
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
        Row(
            f"verify from database, chain check in PostgreSQL ({vf['events']:,} events)",
            vf["from_database"]["per_s"],
            "events/s",
            vf["bare_sha256"]["per_s"],
            "bare SHA-256 walk",
        ),
        Row(
            "  previous path: rows streamed into Python and re-hashed there",
            vf["python_walk"]["per_s"],
            "events/s",
            vf["bare_sha256"]["per_s"],
            "bare SHA-256 walk",
        ),
        Row(
            f"  row and state checks, timed separately ({vf['row_checks']['rows']:,} rows)",
            vf["row_checks"]["seconds"] * 1000,
            "ms",
        ),
        Row("  whole isokron verify (chain + row checks)", vf["whole_verify"]["per_s"], "events/s"),
        Row(
            f"export to file ({vf['export']['bytes'] / 1e6:.1f} MB)",
            vf["export"]["per_s"],
            "events/s",
            vf["bare_sha256"]["per_s"],
            "bare SHA-256 walk",
        ),
        Row(
            "verify from export file (pure-Python verifier)",
            vf["from_bundle"]["per_s"],
            "events/s",
            vf["bare_sha256"]["per_s"],
            "bare SHA-256 walk",
        ),
        Row("bare SHA-256 walk over hash inputs", vf["bare_sha256"]["per_s"], "events/s"),
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
    for label, key, floor in (
        ("verify from the database (chain check)", "from_database", 500_000),
        ("verify --bundle (pure Python)", "from_bundle", 250_000),
        ("export", "export", 250_000),
    ):
        v = vf[key]["per_s"]
        section.targets.append(
            Target(
                f"{label} >= {floor:,} events/s",
                f"{fmt(v)} events/s ({v / vf['bare_sha256']['per_s']:.3f} x bare SHA-256 walk)",
                f">= {floor:,}",
                v >= floor,
            )
        )
    return section
