"""Pipeline overhead per call: authentication + capability + policy + constitution pre-screen.

With the gateway importable, this times what the gateway does in memory before it touches the
database for a ``kora__write_agent_scratchpad`` call: ``Authenticator.authenticate`` on a
cached token (shape check, SHA-256, cache hit), the governance snapshot (cache hit) and
``isokron.gateway.pipeline.screen`` (workspace, kill switch, capability, size caps, argument
text, constitution). Without it, the substrate-only equivalent is timed: the token's SHA-256,
``CapabilityRow.has`` and ``Constitution.evaluate``.

Each call is timed on its own with ``perf_counter_ns``. Coroutines that never suspend (cache
hits) are driven with ``send(None)`` so that no event-loop overhead is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench.config import Sizes
from bench.preload import scratchpad_item
from bench.report import Row, Section, Target
from bench.stats import latency_summary
from bench.substrate import BenchDatabase, create_bench_workspace
from isokron.governance.rules import Constitution
from isokron.substrate import connection, reads, writes

TOOL = "kora__write_agent_scratchpad"


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that completes without suspending; return its value."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the coroutine suspended: it was not a cache hit")


def _time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(min(1000, n)):  # warm-up
        fn()
    for _ in range(n):
        start = clock()
        fn()
        samples.append((clock() - start) / 1e9)
    return samples


async def _setup(db: BenchDatabase) -> dict[str, Any]:
    admin = await connection.connect(db.dsns.admin)
    try:
        ws = await create_bench_workspace(admin, "pipeline")
    finally:
        await admin.close()
    reader = await connection.create_pool(db.dsns.reader, min_size=1, max_size=2)
    try:
        caps = await reads.read_capability_row(reader, ws.workspace_id, "kora")
        active = await reads.read_active_constitution(reader, ws.workspace_id)
    finally:
        await reader.close()
    assert active is not None
    return {"ws": ws, "caps": caps, "rules": active.rules}


def _gateway_path(db: BenchDatabase, ws: Any, arguments: dict[str, Any]) -> Callable[[], Any]:
    """The gateway's own pre-screen, built from its modules (raises ImportError if absent)."""
    from isokron.gateway import pipeline as gp
    from isokron.gateway.auth import Authenticator
    from isokron.gateway.governance import GovernanceCache
    from isokron.gateway.operations import SPECS

    spec = SPECS[TOOL]

    async def build() -> tuple[Any, Any, Any, Any]:
        gw = await connection.create_pool(db.dsns.gateway, min_size=1, max_size=1)
        rd = await connection.create_pool(db.dsns.reader, min_size=1, max_size=2)
        auth = Authenticator(gw, ttl=3600.0)
        cache = GovernanceCache(rd, ttl=3600.0)
        principal = await auth.authenticate(ws.token)  # the database lookup, then cached
        governance = await cache.get(principal.workspace_id, principal.actor_kind)
        await gw.close()
        await rd.close()
        return auth, cache, principal, governance

    auth, cache, principal, governance = asyncio.run(build())
    prepared = spec.prepare(arguments, governance)

    def call() -> Any:
        p = drive(auth.authenticate(ws.token))
        g = drive(cache.get(p.workspace_id, p.actor_kind))
        verdict = gp.screen(
            p,
            g,
            gp.Screening(
                tool=TOOL,
                capability=spec.capability,
                writes=True,
                arguments=prepared.args,
                workspace_id=ws.workspace_id,
                event_type=prepared.event_type,
                inline_content=prepared.inline_content,
                summary=prepared.summary,
            ),
        )
        assert verdict.allowed, verdict
        return verdict

    return call


def run(db: BenchDatabase, sizes: Sizes) -> Section:
    """Time the per-call pre-screen and authorization."""
    section = Section("pipeline overhead per call (pre-screen + authorization)")
    setup = asyncio.run(_setup(db))
    ws, caps = setup["ws"], setup["caps"]
    constitution = Constitution.from_rules(setup["rules"])
    item = scratchpad_item(7)
    arguments = {
        "workspace_id": ws.workspace_id,
        "kind": item["kind"],
        "summary": item["summary"],
        "content": item["content"],
        "session_id": item["session_id"],
    }
    n = sizes.pipeline_iterations

    def substrate_only() -> Any:
        writes.token_sha256(ws.token)
        if not caps.has("cap_write_agent_scratchpad"):
            raise AssertionError("kora should hold cap_write_agent_scratchpad")
        return constitution.evaluate(
            tool=TOOL, event_type="kora.scratchpad.written", arguments=item
        )

    def constitution_only() -> Any:
        return constitution.evaluate(
            tool=TOOL, event_type="kora.scratchpad.written", arguments=item
        )

    figures: dict[str, Any] = {}
    path = "substrate only (gateway not importable)"
    main_label = "token SHA-256 + capability + constitution"
    try:
        gateway_call = _gateway_path(db, ws, arguments)
    except ImportError as exc:
        section.data["gateway_unavailable"] = str(exc)
        gateway_call = None
    if gateway_call is not None:
        path = "gateway: authenticate (cached) + governance (cached) + pipeline.screen"
        main_label = "authenticate + governance + screen (gateway)"
        figures["gateway"] = latency_summary(_time_calls(gateway_call, n))
    figures["substrate_only"] = latency_summary(_time_calls(substrate_only, n))
    figures["constitution_only"] = latency_summary(_time_calls(constitution_only, n))
    section.data.update({"path": path, "iterations": n, "figures": figures})

    main = figures.get("gateway", figures["substrate_only"])
    section.rows.append(Row(f"{main_label} p50", main["p50_ms"] * 1000, "µs"))
    section.rows.append(Row(f"{main_label} p99", main["p99_ms"] * 1000, "µs"))
    if "gateway" in figures:
        sub = figures["substrate_only"]
        section.rows.append(
            Row("token SHA-256 + capability + constitution p50", sub["p50_ms"] * 1000, "µs")
        )
    con = figures["constitution_only"]
    section.rows.append(Row("Constitution.evaluate alone p50", con["p50_ms"] * 1000, "µs"))
    p50_ms = main["p50_ms"]
    section.targets.append(
        Target(
            "pre-screen + authorization p50 <= 0.1 ms",
            f"{p50_ms * 1000:.1f} µs ({path})",
            "<= 100 µs",
            p50_ms <= 0.1,
        )
    )
    return section
