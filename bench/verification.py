"""Verification and export at hashing speed (issue 12 item 3).

One workspace's chain (half ``append_event``, half scratchpad entries, every event through the
write operations) is verified from the database (``audit.verify_workspace``: the chain check
inside PostgreSQL, then the row and state checks, timed separately), exported
(``audit.export_workspace``, bundle version 3) and verified from the file (``chain.verify_bundle``,
the pure-Python verifier; its chain check, on one process per CPU, and its state check timed
separately; the chain check on one process beside it). The baseline
is a bare SHA-256 walk over the exact hash-input bytes of every event, already in memory: the
physical limit of any verifier. Every figure is measured ``ROUNDS`` times, each round running
the baseline beside it (interleaved, so that other load on the shared machine hits both
alike); the best round counts. The previous path (rows streamed into Python and re-hashed)
runs once as a second baseline.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.config import Sizes
from bench.preload import event_item, preload, scratchpad_item
from bench.report import Row, Section, Target, fmt
from bench.stats import rate
from bench.substrate import BenchDatabase, BenchWorkspace, create_bench_workspace
from isokron.chain import bundle_parallel, record_hash_input, verify_bundle, verify_records
from isokron.substrate import audit, connection

ROUNDS = 3
FLOORS = {"from_database": 500_000, "from_bundle": 250_000, "export": 250_000}


async def build_chain(db: BenchDatabase, events: int) -> BenchWorkspace:
    """A workspace whose chain holds ``events`` events (plus its seed events)."""
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


def _hash_inputs(admin: str, workspace_id: str) -> list[bytes]:
    with psycopg.connect(admin) as conn, conn.transaction():
        tenant = audit._tenant_of(conn, workspace_id)
        records = audit.iter_chain(conn, tenant, workspace_id=workspace_id, with_payloads=False)
        return [record_hash_input(r) for r in records]


def _bare_walk(inputs: list[bytes]) -> Callable[[], None]:
    sha256 = hashlib.sha256

    def walk() -> None:
        for b in inputs:
            sha256(b).digest()

    return walk


def _python_walk(admin: str, workspace_id: str) -> float:
    """The previous path, once: every row streamed into Python and re-hashed there."""
    start = time.perf_counter()
    with psycopg.connect(admin) as conn, conn.transaction():
        tenant = audit._tenant_of(conn, workspace_id)
        verify_records(
            audit.iter_chain(conn, tenant, workspace_id=workspace_id, with_payloads=False),
            expected_tenant=tenant,
        )
    return time.perf_counter() - start


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _round(admin: str, ws: BenchWorkspace, bare: Callable[[], None], path: Path) -> dict:
    """One round: each figure right after a bare walk, so both see the same load."""
    out: dict[str, float] = {}
    out["bare_1"] = _timed(bare)[0]
    wall, _, audit_result = _timed(lambda: audit.verify_workspace(admin, ws.workspace_id))
    assert audit_result.ok, audit_result.to_dict()
    out.update(
        whole_verify=wall,
        from_database=audit_result.chain_seconds,
        row_checks=audit_result.rows_seconds,
        rows=audit_result.rows_checked,
        events=audit_result.chain.events_checked,
    )
    out["bare_2"] = _timed(bare)[0]
    out["export"], out["export_cpu"], header = _timed(
        lambda: audit.export_workspace(admin, ws.workspace_id, path)
    )
    out["state_rows"] = header.state_rows or 0
    out["bare_3"] = _timed(bare)[0]
    timings: dict[str, float] = {}
    wall, cpu, report = _timed(lambda: verify_bundle(path, timings=timings))
    assert report.ok, report.to_dict()
    out.update(
        whole_bundle=wall,
        whole_bundle_cpu=cpu,
        from_bundle=timings["chain_seconds"],
        bundle_state=timings["state_seconds"],
        bytes=path.stat().st_size,
    )
    out["from_bundle_one_process"] = _one_process_chain_seconds(path)
    return out


def _one_process_chain_seconds(path: Path) -> float:
    """The bundle's chain check walked on one process (the parallel check switched off)."""
    saved = bundle_parallel.PARALLEL_MIN_BYTES
    bundle_parallel.PARALLEL_MIN_BYTES = 1 << 62
    try:
        timings: dict[str, float] = {}
        assert verify_bundle(path, timings=timings).ok
        return timings["chain_seconds"]
    finally:
        bundle_parallel.PARALLEL_MIN_BYTES = saved


def measure(db: BenchDatabase, ws: BenchWorkspace) -> dict[str, Any]:
    """Every figure of the section, best of ``ROUNDS`` interleaved rounds."""
    admin = db.dsns.admin
    bare = _bare_walk(_hash_inputs(admin, ws.workspace_id))
    with tempfile.TemporaryDirectory(prefix="isokron-bench-") as tmp:
        path = Path(tmp) / "chain.jsonl"
        rounds = [_round(admin, ws, bare, path) for _ in range(ROUNDS)]
    python_s = _python_walk(admin, ws.workspace_id)
    best = {key: min(r[key] for r in rounds) for key in rounds[0]}
    events = int(rounds[0]["events"])
    bare_s = min(best["bare_1"], best["bare_2"], best["bare_3"])

    def fig(key: str) -> dict[str, float]:
        return {"seconds": best[key], "per_s": rate(events, best[key])}

    return {
        "events": events,
        "rounds": ROUNDS,
        "from_database": fig("from_database"),
        "whole_verify": fig("whole_verify"),
        "row_checks": {"seconds": best["row_checks"], "rows": int(rounds[0]["rows"])},
        "python_walk": {"seconds": python_s, "per_s": rate(events, python_s)},
        "export": {**fig("export"), "bytes": int(best["bytes"]), "cpu_seconds": best["export_cpu"]},
        "state_rows": int(rounds[0]["state_rows"]),
        "from_bundle": fig("from_bundle"),
        "from_bundle_one_process": fig("from_bundle_one_process"),
        "bundle_state": {"seconds": best["bundle_state"]},
        "whole_bundle": {**fig("whole_bundle"), "cpu_seconds": best["whole_bundle_cpu"]},
        "bare_sha256": {"seconds": bare_s, "per_s": rate(events, bare_s)},
        "all_rounds": rounds,
    }


def _rows(vf: dict[str, Any]) -> list[Row]:
    bare = vf["bare_sha256"]["per_s"]
    base = "bare SHA-256 walk"
    return [
        Row(
            f"verify from database, chain check in PostgreSQL ({vf['events']:,} events)",
            vf["from_database"]["per_s"],
            "events/s",
            bare,
            base,
        ),
        Row(
            "  previous path: rows streamed into Python and re-hashed there",
            vf["python_walk"]["per_s"],
            "events/s",
            bare,
            base,
        ),
        Row(
            f"  row and state checks, timed separately ({vf['row_checks']['rows']:,} rows)",
            vf["row_checks"]["seconds"] * 1000,
            "ms",
        ),
        Row("  whole isokron verify (chain + row checks)", vf["whole_verify"]["per_s"], "events/s"),
        Row(
            f"export to file, version 3 ({vf['export']['bytes'] / 1e6:.1f} MB, "
            f"{vf['state_rows']:,} state lines)",
            vf["export"]["per_s"],
            "events/s",
            bare,
            base,
        ),
        Row(
            "verify --bundle, chain check (pure-Python verifier, one process per CPU)",
            vf["from_bundle"]["per_s"],
            "events/s",
            bare,
            base,
        ),
        Row(
            "  the same chain check on one process (sequential walk)",
            vf["from_bundle_one_process"]["per_s"],
            "events/s",
            bare,
            base,
        ),
        Row(
            "  state check of the bundle, timed separately",
            vf["bundle_state"]["seconds"] * 1000,
            "ms",
        ),
        Row("  whole verify --bundle (chain + state)", vf["whole_bundle"]["per_s"], "events/s"),
        Row("bare SHA-256 walk over hash inputs", bare, "events/s"),
    ]


def run(db: BenchDatabase, sizes: Sizes) -> Section:
    """Run the verification benchmarks and return their section."""
    section = Section("verification and export")
    ws = asyncio.run(build_chain(db, sizes.verify_events))
    vf = measure(db, ws)
    section.data = {"verify": vf}
    section.rows += _rows(vf)
    bare = vf["bare_sha256"]["per_s"]
    for label, key in (
        ("verify from the database (chain check)", "from_database"),
        ("verify --bundle (pure Python, chain check)", "from_bundle"),
        ("export", "export"),
    ):
        v, floor = vf[key]["per_s"], FLOORS[key]
        section.targets.append(
            Target(
                f"{label} >= {floor:,} events/s",
                f"{fmt(v)} events/s ({v / bare:.3f} x bare SHA-256 walk)",
                f">= {floor:,}",
                v >= floor,
            )
        )
    return section
