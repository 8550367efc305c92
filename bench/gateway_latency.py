"""Gateway write latency and throughput, beside the reference MCP memory server.

Every call goes through the official MCP Python SDK client, to IsoKron's gateway over stdio
and over streamable HTTP (``kora__write_agent_scratchpad`` and ``iso_node_create``) and to the
reference server over stdio (its only transport; ``create_entities`` with one entity of the
same text). Latency is measured with ``N`` items already stored, for each ``N`` of
``Sizes.gateway_items``: IsoKron's workspace then holds ``N`` scratchpad entries *and* ``N``
iso nodes (each with its chain event), the reference file ``N`` entities.

Each store size has its own database (and HTTP gateway, and reference file), so that all the
sessions can be open at once and timed in ``ROUNDS`` interleaved rounds: a change of load on
the machine during the run then hits every size alike, which matters for the target that
compares 50k items with 1k. Each series is ``Sizes.gateway_samples`` sequential calls (at
most ``MAX_POINT_SECONDS``, at least ``MIN_SAMPLES``) after 10 untimed warm-up calls.

Throughput is measured with the smallest store, for 1, 4 and 16 concurrent clients, each with
its own MCP session: over HTTP all sessions share one gateway process; over stdio each client
spawns its own gateway process (as stdio MCP clients do), and so does each client of the
reference server, all of them on the same memory file. The reference server does not
serialize writers across processes, so concurrent clients lose each other's entities: the
count lost is reported.

Peak RSS of the gateway processes and of the reference server is sampled throughout.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
from mcp.client.session import ClientSession

from bench import reference_server as ref
from bench.config import Sizes
from bench.mcp_clients import (
    HttpGateway,
    call,
    isokron_http_session,
    isokron_stdio_session,
    reference_session,
)
from bench.memory import PeakRss, children_matching
from bench.preload import SENTENCE, node_item, preload, scratchpad_item
from bench.report import Row, Section, Target, fmt
from bench.stats import latency_summary, rate
from bench.substrate import (
    BenchDatabase,
    BenchWorkspace,
    create_bench_workspace,
    sibling_database,
)
from isokron.substrate import connection

SCRATCHPAD_TOOL = "kora__write_agent_scratchpad"
NODE_TOOL = "iso_node_create"
REFERENCE_TOOL = "create_entities"
WARMUP_CALLS = 10
MIN_SAMPLES = 30
MAX_POINT_SECONDS = 30.0
ROUNDS = 5
COUNT_ITEMS_SQL = """
SELECT (SELECT count(*) FROM kronicle.agent_scratchpad_entries WHERE workspace_id = $1),
       (SELECT count(*) FROM kronicle.iso_nodes WHERE workspace_id = $1)
"""

_ids = itertools.count(1_000_000)


def _text(i: int) -> str:
    return SENTENCE.format(i=i) + f" Item {i}: follow up with the operator tomorrow."


def scratchpad_call(i: int) -> dict[str, Any]:
    """Arguments of one ``kora__write_agent_scratchpad`` call (about 300 bytes of content)."""
    return {
        "kind": "observation",
        "summary": f"export order fix #{i}",
        "content": _text(i),
        "session_id": "bench-gateway",
    }


def node_call(i: int) -> dict[str, Any]:
    """Arguments of one ``iso_node_create`` call."""
    return {
        "node_type": "decision",
        "title": f"Run retention after export (#{i})",
        "content": _text(i),
    }


def reference_call(i: int) -> dict[str, Any]:
    """Arguments of one ``create_entities`` call: one entity with the same text."""
    return {"entities": [ref.entity(f"bench-{i}", _text(i))]}


ISOKRON_CALLS = {SCRATCHPAD_TOOL: scratchpad_call, NODE_TOOL: node_call}


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


@dataclass
class _Series:
    """The timed calls of one (store size, server, tool) series, accumulated over rounds."""

    session: ClientSession
    tool: str
    make: Callable[[int], dict[str, Any]]
    procs: list[psutil.Process]
    samples: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    async def warm_up(self) -> None:
        for _ in range(WARMUP_CALLS):
            await call(self.session, self.tool, self.make(next(_ids)))

    async def block(self, calls: int, max_seconds: float, min_calls: int) -> None:
        """Up to ``calls`` sequential timed calls; after ``max_seconds``, stop once
        ``min_calls`` are done (so a slow server cannot stretch the run)."""
        me = psutil.Process()
        server_cpu, client_cpu = _cpu_seconds(self.procs), _cpu_seconds([me])
        deadline = time.perf_counter() + max_seconds
        for done in range(1, calls + 1):
            args = self.make(next(_ids))
            start = time.perf_counter()
            await call(self.session, self.tool, args)
            self.samples.append(time.perf_counter() - start)
            if done >= min_calls and time.perf_counter() > deadline:
                break
        self.server_cpu += _cpu_seconds(self.procs) - server_cpu
        self.client_cpu += _cpu_seconds([me]) - client_cpu

    def summary(self) -> dict[str, Any]:
        """Latency percentiles plus CPU per call of the server process(es) and this client:
        unlike wall time, CPU time hardly moves when other work shares the machine."""
        out = latency_summary(self.samples)
        n = max(len(self.samples), 1)
        out["server_cpu_ms"] = self.server_cpu / n * 1000
        out["client_cpu_ms"] = self.client_cpu / n * 1000
        return out


@dataclass
class _Point:
    """One store size: its own database, workspace, HTTP gateway and reference file."""

    size: int
    db: BenchDatabase
    ws: BenchWorkspace
    url: str
    http_proc: psutil.Process
    memory_file: Path | None


def _child_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _new_children(before: set[int], needle: str) -> list[psutil.Process]:
    """Descendants started since ``before`` whose command line contains ``needle``."""
    return [p for p in children_matching(needle)() if p.pid not in before]


async def _latency(
    points: list[_Point], entry: Path | None, samples: int, errlog: IO[str]
) -> dict[int, Any]:
    """Open every session at once, then time them in ``ROUNDS`` interleaved rounds."""
    series: dict[tuple[int, str, str], _Series] = {}
    async with AsyncExitStack() as stack:
        for p in points:
            before = _child_pids()
            stdio = await stack.enter_async_context(isokron_stdio_session(p.db, p.ws.token, errlog))
            stdio_procs = _new_children(before, "--transport stdio")
            http = await stack.enter_async_context(isokron_http_session(p.url, p.ws.token))
            for tool, make in ISOKRON_CALLS.items():
                series[(p.size, "stdio", tool)] = _Series(stdio, tool, make, stdio_procs)
                series[(p.size, "http", tool)] = _Series(http, tool, make, [p.http_proc])
            if entry is not None and p.memory_file is not None:
                before = _child_pids()
                session = await stack.enter_async_context(
                    reference_session(entry, p.memory_file, errlog)
                )
                procs = _new_children(before, "server-memory")
                series[(p.size, "reference", REFERENCE_TOOL)] = _Series(
                    session, REFERENCE_TOOL, reference_call, procs
                )
        for one in series.values():
            await one.warm_up()
        per_round = -(-samples // ROUNDS)
        min_per_round = -(-MIN_SAMPLES // ROUNDS)
        for _ in range(ROUNDS):
            for one in series.values():
                await one.block(per_round, MAX_POINT_SECONDS / ROUNDS, min_per_round)
    out: dict[int, Any] = {}
    for (size, server, tool), one in series.items():
        point = out.setdefault(size, {"isokron": {"stdio": {}, "http": {}}})
        if server == "reference":
            point["reference"] = one.summary()
        else:
            point["isokron"][server][tool] = one.summary()
    return out


async def _top_up(db: BenchDatabase, ws: BenchWorkspace, target: int) -> tuple[int, int]:
    """Preload scratchpad entries and nodes until each count reaches ``target``."""
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
        async with connection.workspace_transaction(admin, ws.workspace_id):
            row = await admin.fetchrow(COUNT_ITEMS_SQL, ws.workspace_id)
        return int(row[0]), int(row[1])
    finally:
        await admin.close()
        await pool.close()


async def _run_clients(
    sessions: list[ClientSession], tool: str, make: Any, seconds: float
) -> tuple[int, float, list[int]]:
    """Each session calls ``tool`` in a loop until time is up; returns calls, seconds, ids."""
    done: list[int] = []
    end = time.perf_counter() + seconds

    async def worker(session: ClientSession) -> None:
        while time.perf_counter() < end:
            i = next(_ids)
            await call(session, tool, make(i))
            done.append(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(s) for s in sessions))
    return len(done), time.perf_counter() - start, done


async def _throughput(
    db: BenchDatabase,
    ws: BenchWorkspace,
    url: str,
    entry: Path | None,
    memory_file: Path,
    clients: int,
    seconds: float,
    errlog: IO[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(isokron_http_session(url, ws.token))
            for _ in range(clients)
        ]
        n, s, _ = await _run_clients(sessions, SCRATCHPAD_TOOL, scratchpad_call, seconds)
        out["http"] = {"calls": n, "seconds": s, "per_s": rate(n, s)}
    async with AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(isokron_stdio_session(db, ws.token, errlog))
            for _ in range(clients)
        ]
        n, s, _ = await _run_clients(sessions, SCRATCHPAD_TOOL, scratchpad_call, seconds)
        out["stdio"] = {"calls": n, "seconds": s, "per_s": rate(n, s)}
    if entry is not None:
        async with AsyncExitStack() as stack:
            sessions = [
                await stack.enter_async_context(reference_session(entry, memory_file, errlog))
                for _ in range(clients)
            ]
            n, s, ids = await _run_clients(sessions, REFERENCE_TOOL, reference_call, seconds)
        stored = ref.entity_names(memory_file)
        lost = sum(1 for i in ids if f"bench-{i}" not in stored)
        out["reference"] = {"calls": n, "seconds": s, "per_s": rate(n, s), "lost": lost}
    return out


def _setup_workspace(db: BenchDatabase) -> BenchWorkspace:
    async def make() -> BenchWorkspace:
        admin = await connection.connect(db.dsns.admin)
        try:
            return await create_bench_workspace(admin, "gateway")
        finally:
            await admin.close()

    return asyncio.run(make())


def run(db: BenchDatabase, sizes: Sizes) -> Section:
    """Measure gateway write latency, throughput and RSS beside the reference server."""
    section = Section("gateway writes over MCP (vs reference memory server)")
    try:
        entry: Path | None = ref.ensure_installed()
        section.data["reference_version"] = ref.installed_version()
    except ref.ReferenceUnavailable as exc:
        entry = None
        section.data["reference_unavailable"] = str(exc)
    throughput: dict[int, Any] = {}
    stored: dict[int, Any] = {}
    with tempfile.TemporaryDirectory(prefix="isokron-bench-gw-") as tmp, ExitStack() as stack:
        errlog = stack.enter_context(open(Path(tmp) / "servers.log", "w", encoding="utf-8"))
        # One database per store size, so that the sizes can be timed in interleaved rounds.
        dbs = [db] + [stack.enter_context(sibling_database(db)) for _ in sizes.gateway_items[1:]]
        points: list[_Point] = []
        for size, point_db in zip(sizes.gateway_items, dbs, strict=True):
            ws = _setup_workspace(point_db)
            stored[size] = asyncio.run(_top_up(point_db, ws, size))
            http = stack.enter_context(HttpGateway(point_db, errlog))
            assert http.process is not None
            memory_file = Path(tmp) / f"memory-{size}.jsonl"
            if entry is not None:
                _fill_memory_file(memory_file, size)
            points.append(
                _Point(size, point_db, ws, http.url, psutil.Process(http.process.pid), memory_file)
            )
        http_procs = [p.http_proc for p in points]
        with (
            PeakRss(lambda: http_procs) as http_rss,
            PeakRss(children_matching("--transport stdio")) as stdio_rss,
            PeakRss(children_matching("server-memory")) as ref_rss,
        ):
            latency = asyncio.run(_latency(points, entry, sizes.gateway_samples, errlog))
            small = points[0]
            for clients in sizes.throughput_clients:
                if entry is not None:
                    _fill_memory_file(small.memory_file, small.size)  # type: ignore[arg-type]
                throughput[clients] = asyncio.run(
                    _throughput(
                        small.db,
                        small.ws,
                        small.url,
                        entry,
                        small.memory_file,  # type: ignore[arg-type]
                        clients,
                        sizes.throughput_seconds,
                        errlog,
                    )
                )
    section.data.update(
        {
            "workspace_items": {str(k): v for k, v in stored.items()},
            "latency": {str(k): v for k, v in latency.items()},
            "throughput": {str(k): v for k, v in throughput.items()},
            "peak_rss_mib": {
                "http_gateway": http_rss.peak_mib,
                "stdio_gateway": stdio_rss.peak_mib,
                "reference_server": ref_rss.peak_mib,
            },
        }
    )
    _rows_and_targets(section, sizes, latency, throughput, http_rss, stdio_rss, ref_rss)
    return section


def _fill_memory_file(path: Path, size: int) -> None:
    ref.write_memory_file(path, [ref.entity(f"pre-{i}", _text(i)) for i in range(size)])


def _rows_and_targets(
    section: Section,
    sizes: Sizes,
    latency: dict[int, Any],
    throughput: dict[int, Any],
    http_rss: PeakRss,
    stdio_rss: PeakRss,
    ref_rss: PeakRss,
) -> None:
    for size, point in latency.items():
        ref_p = point.get("reference")
        base = ref_p["p50_ms"] if ref_p else None
        for transport in ("stdio", "http"):
            for tool, fig in point["isokron"][transport].items():
                section.rows.append(
                    Row(
                        f"{tool} {transport}, {size:,} stored: p50",
                        fig["p50_ms"],
                        "ms",
                        base,
                        "reference create_entities p50" if base is not None else "",
                        f"p95 {fmt(fig['p95_ms'])} ms, p99 {fmt(fig['p99_ms'])} ms; CPU per call: "
                        f"gateway {fmt(fig['server_cpu_ms'])} ms, client "
                        f"{fmt(fig['client_cpu_ms'])} ms",
                    )
                )
        if ref_p:
            section.rows.append(
                Row(
                    f"reference create_entities, {size:,} stored: p50",
                    ref_p["p50_ms"],
                    "ms",
                    note=f"p95 {fmt(ref_p['p95_ms'])} ms, p99 {fmt(ref_p['p99_ms'])} ms; CPU per "
                    f"call: server {fmt(ref_p['server_cpu_ms'])} ms, client "
                    f"{fmt(ref_p['client_cpu_ms'])} ms",
                )
            )
    for clients, t in throughput.items():
        base = t.get("reference", {}).get("per_s")
        for transport, what in (("http", "one gateway"), ("stdio", "a gateway per client")):
            section.rows.append(
                Row(
                    f"scratchpad writes/s, {clients} clients, {transport} ({what})",
                    t[transport]["per_s"],
                    "ops/s",
                    base,
                    "reference, same clients" if base is not None else "",
                )
            )
        if "reference" in t:
            r = t["reference"]
            section.rows.append(
                Row(
                    f"reference create_entities/s, {clients} clients",
                    r["per_s"],
                    "ops/s",
                    note=f"{r['lost']} of {r['calls']} acknowledged entities lost",
                )
            )
    section.rows += [
        Row("peak RSS, HTTP gateway process", http_rss.peak_mib, "MiB"),
        Row("peak RSS, one stdio gateway process", stdio_rss.peak_mib, "MiB"),
        Row("peak RSS, one reference server process", ref_rss.peak_mib, "MiB"),
    ]
    small, mid, large = sizes.gateway_items[0], sizes.gateway_items[1], sizes.gateway_items[-1]
    ref_mid = latency[mid].get("reference")
    worst_mid = max(
        (fig["p50_ms"], f"{tool} {tr}")
        for tr, tools in latency[mid]["isokron"].items()
        for tool, fig in tools.items()
    )
    if ref_mid:
        ratio = worst_mid[0] / ref_mid["p50_ms"]
        section.targets.append(
            Target(
                f"gateway write p50 at {mid:,} items <= 0.5 x reference p50 (same run)",
                f"worst {fmt(worst_mid[0])} ms ({worst_mid[1]}) = {ratio:.3f} x "
                f"{fmt(ref_mid['p50_ms'])} ms",
                "<= 0.5 x",
                ratio <= 0.5,
            )
        )
    else:
        section.targets.append(
            Target(
                f"gateway write p50 at {mid:,} items <= 0.5 x reference p50",
                "reference server unavailable",
                "<= 0.5 x",
                None,
            )
        )
    worst = max(
        (
            latency[large]["isokron"][tr][tool]["p50_ms"]
            / latency[small]["isokron"][tr][tool]["p50_ms"],
            f"{tool} {tr}",
        )
        for tr in ("stdio", "http")
        for tool in ISOKRON_CALLS
    )
    section.targets.append(
        Target(
            f"gateway write p50 at {large:,} items <= 1.2 x p50 at {small:,}",
            f"worst {worst[0]:.2f} x ({worst[1]})",
            "<= 1.2 x",
            worst[0] <= 1.2,
        )
    )
