"""Provider costs: session context, prompt block and per-turn overhead, beside holographic.

For each ``N`` of ``Sizes.provider_items`` the workspace holds ``N`` scratchpad entries and
``N`` iso nodes (each with its chain event), and Hermes's bundled ``holographic`` provider a
SQLite fact store of ``N`` facts with the same text (inserted in bulk into its own schema).

- Session context: ``reads.assemble_session_context`` (one statement, migration 0070) as the
  first call on a freshly created reader pool (its connection open, its prepared statement not
  yet cached), the second call on it, and calls on a connected pool, interleaved with the
  baseline: the seven single reads the session context was before (each its own transaction
  on its own connection, all at once).
- Provider, in a child process (``bench.provider_child``) so that its RSS is its own:
  ``session_context()`` after a cache flush, warm ``system_prompt_block``, and the per-turn
  overhead ``on_turn_start`` + ``prefetch`` + ``sync_turn``, with the cache fresh (turns less
  than the 60 s cache TTL apart) and expired (turns further apart: every turn starts a
  refresh, which runs in the background after ``prefetch`` while the previous values are
  served). Wall time per turn, and the process's CPU time over the turn beside it.
- Holographic, in a child process too: the same hooks with the same message. Its per-turn
  work is ``prefetch`` (an FTS5 search with Jaccard re-ranking); ``on_turn_start`` and
  ``sync_turn`` do nothing. NumPy is not installed with hermes-agent here, so its optional
  HRR re-ranking is off, as it is for a default install.
- The two children alternate, ``CHILD_ROUNDS`` times each per size with a share of the samples,
  and each figure is the median of all their samples: a change of load on the machine during
  the runs hits both providers alike (peak RSS: the largest of the rounds).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.config import Sizes
from bench.memory import PeakRss
from bench.preload import SENTENCE, node_item, preload, scratchpad_item
from bench.report import Row, Section, Target, fmt
from bench.stats import latency_summary
from bench.substrate import BenchDatabase, BenchWorkspace, create_bench_workspace
from isokron.substrate import connection, reads

COUNT_ITEMS_SQL = """
SELECT (SELECT count(*) FROM kronicle.agent_scratchpad_entries WHERE workspace_id = $1),
       (SELECT count(*) FROM kronicle.iso_nodes WHERE workspace_id = $1)
"""
CHILD_TIMEOUT_SECONDS = 900
BASELINE_POOL_SIZE = 7  # the seven-read baseline ran its reads at once, one connection each
#: The two providers' children run alternately, each this many times per workspace size.
CHILD_ROUNDS = 4


async def _top_up(db: BenchDatabase, ws: BenchWorkspace, target: int) -> tuple[int, int]:
    pool = await connection.create_pool(db.dsns.gateway, min_size=1, max_size=2)
    admin = await connection.connect(db.dsns.admin)
    try:
        async with connection.workspace_transaction(admin, ws.workspace_id):
            have_sp, have_nodes = await admin.fetchrow(COUNT_ITEMS_SQL, ws.workspace_id)
        if target > have_sp:
            await preload(
                pool,
                ws.workspace_id,
                ws.token,
                "write_scratchpad_entry",
                scratchpad_item,
                target - have_sp,
                start=have_sp,
            )
        if target > have_nodes:
            await preload(
                pool,
                ws.workspace_id,
                ws.token,
                "iso_node_create",
                node_item,
                target - have_nodes,
                start=have_nodes,
            )
        await admin.execute("ANALYZE")
        return target, target
    finally:
        await admin.close()
        await pool.close()


async def _seven_reads(pool: asyncpg.Pool, ws: str) -> None:
    """The baseline: the session context as it was read before 0070 (seven statements, each in
    its own workspace-scoped transaction on its own pooled connection, all at once)."""
    await asyncio.gather(
        reads.read_active_role_charter(pool, ws),
        reads.read_policy_registry(pool, ws),
        reads.read_capability_row(pool, ws, "kora"),
        reads.read_own_scratchpad(pool, ws),
        reads.read_cross_agent_scratchpad(pool, ws),
        reads.read_recent_events(pool, ws),
        reads.read_active_constitution(pool, ws),
    )


async def _cold_context(
    db: BenchDatabase, ws: BenchWorkspace, samples: int, connected_samples: int
) -> dict[str, Any]:
    """Cold (first call on a fresh pool) and second call, per fresh pool; then, on one
    connected pool, the one statement and the seven-read baseline interleaved."""
    cold, warm = [], []
    for _ in range(samples):
        pool = await connection.create_pool(
            db.dsns.reader, min_size=1, max_size=1, session_state=False
        )
        try:
            start = time.perf_counter()
            ctx = await reads.assemble_session_context(pool, ws.workspace_id)
            cold.append(time.perf_counter() - start)
            assert ctx.role_charter is not None, ctx.identity_error
            start = time.perf_counter()
            await reads.assemble_session_context(pool, ws.workspace_id)
            warm.append(time.perf_counter() - start)
        finally:
            await pool.close()
    one, seven, one_cpu = [], [], []
    # The provider's pool (reads only: no session reset on release) and, for the baseline, the
    # pool the seven reads had (seven connections, asyncpg's full reset on release).
    pool = await connection.create_pool(db.dsns.reader, min_size=1, max_size=1, session_state=False)
    before = await connection.create_pool(
        db.dsns.reader, min_size=BASELINE_POOL_SIZE, max_size=BASELINE_POOL_SIZE
    )
    try:
        await _seven_reads(before, ws.workspace_id)
        await reads.assemble_session_context(pool, ws.workspace_id)
        for _ in range(connected_samples):
            cpu, start = time.process_time(), time.perf_counter()
            await reads.assemble_session_context(pool, ws.workspace_id)
            one.append(time.perf_counter() - start)
            one_cpu.append(time.process_time() - cpu)
            start = time.perf_counter()
            await _seven_reads(before, ws.workspace_id)
            seven.append(time.perf_counter() - start)
    finally:
        await pool.close()
        await before.close()
    return {
        "cold": latency_summary(cold),
        "second_call": latency_summary(warm),
        "connected": latency_summary(one),
        "connected_client_cpu": latency_summary(one_cpu),
        "connected_seven_reads": latency_summary(seven),
    }


def _holographic_db(path: Path, count: int) -> None:
    """A holographic fact store of ``count`` facts, schema made by the plugin itself."""
    from plugins.memory.holographic.store import MemoryStore

    store = MemoryStore(db_path=str(path))
    store.close()
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO facts (content, category, tags, trust_score) VALUES (?, ?, '', 0.5)",
                (
                    (f"Run retention after export (#{i}): " + SENTENCE.format(i=i), "project")
                    for i in range(count)
                ),
            )
    finally:
        conn.close()


def _child(argv: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """Run ``bench.provider_child`` with ``argv``; return its JSON and its peak RSS (MiB)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.provider_child", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    child = psutil.Process(proc.pid)
    with PeakRss(lambda: [child]) as rss:
        try:
            out, err = proc.communicate(timeout=CHILD_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"provider child {argv[0]} failed ({proc.returncode}): {err.strip()[-1500:]}"
        )
    return json.loads(lines[-1]), rss.peak_mib


def _summaries(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, list):
            out[key] = latency_summary(value)
        elif isinstance(value, dict):
            out[key] = {k: latency_summary(v) for k, v in value.items()}
        else:
            out[key] = value
    return out


def _pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The children's samples of every round in one list per figure (scalars: the last)."""
    out: dict[str, Any] = {}
    for raw in rounds:
        for key, value in raw.items():
            if isinstance(value, list):
                out.setdefault(key, []).extend(value)
            elif isinstance(value, dict):
                part = out.setdefault(key, {})
                for k, v in value.items():
                    part.setdefault(k, []).extend(v)
            else:
                out[key] = value
    return out


def _interleaved(db: BenchDatabase, ws: BenchWorkspace, holo: Path, samples: int) -> dict[str, Any]:
    """Both providers' children, alternately, in ``CHILD_ROUNDS`` rounds of a share of the
    samples each: a change of load on the machine during the runs hits both alike."""
    share = max(samples // CHILD_ROUNDS, 5)
    iso_rounds, holo_rounds = [], []
    iso_rss = holo_rss = 0.0
    for _ in range(CHILD_ROUNDS):
        raw, rss = _child(
            [
                "isokron",
                "--samples",
                str(share),
                "--reader-dsn",
                db.dsns.reader,
                "--gateway-dsn",
                db.dsns.gateway,
                "--workspace",
                ws.workspace_id,
            ],
            {"KORA_SERVICE_TOKEN": ws.token},
        )
        iso_rounds.append(raw)
        iso_rss = max(iso_rss, rss)
        raw, rss = _child(["holographic", "--samples", str(share), "--db", str(holo)], {})
        holo_rounds.append(raw)
        holo_rss = max(holo_rss, rss)
    return {
        "isokron": _summaries(_pooled(iso_rounds)),
        "isokron_peak_rss_mib": iso_rss,
        "holographic": _summaries(_pooled(holo_rounds)),
        "holographic_peak_rss_mib": holo_rss,
        "child_rounds": CHILD_ROUNDS,
    }


def run(db: BenchDatabase, sizes: Sizes) -> Section:
    """Measure the provider beside the holographic provider at each workspace size."""
    section = Section("Hermes memory provider (vs bundled holographic provider)")

    async def make() -> BenchWorkspace:
        admin = await connection.connect(db.dsns.admin)
        try:
            return await create_bench_workspace(admin, "provider")
        finally:
            await admin.close()

    ws = asyncio.run(make())
    points: dict[int, Any] = {}
    cold_samples = max(10, min(sizes.provider_samples, 50))
    with tempfile.TemporaryDirectory(prefix="isokron-bench-holo-") as tmp:
        for size in sizes.provider_items:
            asyncio.run(_top_up(db, ws, size))
            point: dict[str, Any] = {
                "assemble_session_context": asyncio.run(
                    _cold_context(db, ws, cold_samples, sizes.provider_samples)
                )
            }
            holo = Path(tmp) / f"holographic-{size}.db"
            _holographic_db(holo, size)
            point.update(_interleaved(db, ws, holo, sizes.provider_samples))
            points[size] = point
    section.data = {"workspace": ws.workspace_id, "points": {str(k): v for k, v in points.items()}}
    _rows_and_targets(section, points)
    return section


def _rows_and_targets(section: Section, points: dict[int, Any]) -> None:
    for size, p in points.items():
        cold = p["assemble_session_context"]["cold"]
        iso, holo = p["isokron"], p["holographic"]
        section.rows += [
            Row(
                f"{size:,} items: cold session context (fresh pool) p50",
                cold["p50_ms"],
                "ms",
                note=f"p95 {fmt(cold['p95_ms'])} ms",
            ),
            Row(
                f"{size:,} items: session context, second call on that pool p50",
                p["assemble_session_context"]["second_call"]["p50_ms"],
                "ms",
            ),
            Row(
                f"{size:,} items: session context on a connected pool p50",
                p["assemble_session_context"]["connected"]["p50_ms"],
                "ms",
                p["assemble_session_context"]["connected_seven_reads"]["p50_ms"],
                "seven single reads (before 0070)",
                f"client CPU p50 "
                f"{fmt(p['assemble_session_context']['connected_client_cpu']['p50_ms'])} ms",
            ),
            Row(
                f"{size:,} items: provider session_context after cache flush p50",
                iso["session_context_after_flush"]["p50_ms"],
                "ms",
            ),
            Row(
                f"{size:,} items: warm system_prompt_block p50",
                iso["system_prompt_block_warm"]["p50_ms"] * 1000,
                "µs",
                holo["system_prompt_block_warm"]["p50_ms"] * 1000,
                "holographic's",
            ),
            Row(
                f"{size:,} items: per-turn overhead, cache fresh p50",
                iso["turn_cache_fresh"]["turn"]["p50_ms"],
                "ms",
                holo["turn"]["turn"]["p50_ms"],
                "holographic per turn",
                f"prefetch {fmt(iso['turn_cache_fresh']['prefetch']['p50_ms'])} ms; "
                f"process CPU p50 {fmt(iso['turn_cache_fresh']['turn_cpu']['p50_ms'])} ms vs "
                f"holographic's {fmt(holo['turn']['turn_cpu']['p50_ms'])} ms",
            ),
            Row(
                f"{size:,} items: per-turn overhead, cache expired p50",
                iso["turn_cache_expired"]["turn"]["p50_ms"],
                "ms",
                holo["turn"]["turn"]["p50_ms"],
                "holographic per turn",
                f"on_turn_start {fmt(iso['turn_cache_expired']['on_turn_start']['p50_ms'])} ms, "
                f"prefetch {fmt(iso['turn_cache_expired']['prefetch']['p50_ms'])} ms; "
                f"process CPU p50 {fmt(iso['turn_cache_expired']['turn_cpu']['p50_ms'])} ms",
            ),
        ]
        if "turn_that_writes" in iso:
            section.rows.append(
                Row(
                    f"{size:,} items: turn whose reply names a capability (writes) p50",
                    iso["turn_that_writes"]["turn"]["p50_ms"],
                    "ms",
                    note=f"sync_turn {fmt(iso['turn_that_writes']['sync_turn']['p50_ms'])} ms",
                )
            )
        section.rows.append(
            Row(f"{size:,} items: holographic per-turn p95", holo["turn"]["turn"]["p95_ms"], "ms")
        )
    largest = max(points)
    section.rows += [
        Row(
            f"peak RSS, provider process ({largest:,} items)",
            points[largest]["isokron_peak_rss_mib"],
            "MiB",
            points[largest]["holographic_peak_rss_mib"],
            "holographic process",
        ),
    ]
    worst_connected = max(
        (p["assemble_session_context"]["connected"]["p50_ms"], s) for s, p in points.items()
    )
    section.targets.append(
        Target(
            "session context p50 on a connected pool <= 2 ms (every size)",
            f"worst {fmt(worst_connected[0])} ms (at {worst_connected[1]:,} items)",
            "<= 2 ms",
            worst_connected[0] <= 2.0,
        )
    )
    worst_block = max(
        (p["isokron"]["system_prompt_block_warm"]["p50_ms"] * 1000, s) for s, p in points.items()
    )
    section.targets.append(
        Target(
            "warm system_prompt_block <= 50 µs",
            f"worst p50 {fmt(worst_block[0])} µs (at {worst_block[1]:,} items)",
            "<= 50 µs",
            worst_block[0] <= 50.0,
        )
    )
    for mode in ("turn_cache_expired", "turn_cache_fresh"):
        worst = max(
            (
                p["isokron"][mode]["turn"]["p50_ms"] / p["holographic"]["turn"]["turn"]["p50_ms"],
                s,
                p["isokron"][mode]["turn"]["p50_ms"],
                p["holographic"]["turn"]["turn"]["p50_ms"],
            )
            for s, p in points.items()
        )
        label = "cache expired every turn" if mode == "turn_cache_expired" else "cache fresh"
        section.targets.append(
            Target(
                f"per-turn overhead <= holographic's ({label})",
                f"worst {fmt(worst[2])} ms vs {fmt(worst[3])} ms = {worst[0]:.2f} x "
                f"(at {worst[1]:,} items)",
                "<= 1.0 x",
                worst[0] <= 1.0,
            )
        )
