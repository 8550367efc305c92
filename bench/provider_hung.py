"""What a hung database costs a Hermes turn: ``python -m bench.provider_hung [--turns N]``.

Starts its own embedded PostgreSQL (it freezes it with SIGSTOP, so never a shared server), a
workspace and a provider with its stdio gateway, then times the provider's share of a turn —
``on_turn_start`` + ``prefetch`` + a model tool write (``iso_node_create``) + a ``sync_turn``
that writes — three ways, in the same run:

* **baseline**: the database answers (the cache expired before each turn, so every read runs);
* **first hung turn**: PostgreSQL just frozen; this turn pays the timeouts that open the breakers;
* **breaker open**: the following turns with PostgreSQL still frozen (issue 11's budget is
  250 ms per turn).

Then it thaws PostgreSQL and reports how long until every write made while it was frozen is
delivered. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from isokron.governance.seeds import default_seed
from isokron.provider.config import IsoKronProviderConfig
from isokron.provider.provider import IsoKronMemoryProvider
from isokron.substrate import writes
from isokron.substrate.connection import connect
from isokron.substrate.dsn import SubstrateDSNs
from isokron.substrate.embedded import start_embedded, stop_embedded
from isokron.substrate.migrate import upgrade

HOOK_TIMEOUT_SECONDS = 2.0
TTL_SECONDS = 60.0
RATE_LIMIT_POLICY = "policy.kora_rate_limit_per_minute"


class Clock:
    """Monotonic time the benchmark can move forward, to expire the provider's cache."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def _signal_all(pgdata: Path, sig: signal.Signals) -> None:
    pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    main = psutil.Process(pid)
    for process in (main, *main.children(recursive=True)):
        process.send_signal(sig)


async def _workspace(admin: str) -> tuple[str, str]:
    conn = await connect(admin)
    try:
        created = await writes.create_workspace(
            conn, "hung-bench", "hung database benchmark", seed=default_seed()
        )
        issued = await writes.issue_token(
            conn, "hung-bench", created.operator_actor_id, created.actors["kora"], label="bench"
        )
        # The recovery figure is about the outbox, not about the per-minute write budget.
        await writes.govern(
            conn,
            "set_policies",
            "hung-bench",
            created.operator_actor_id,
            {"policies": [{"policy_key": RATE_LIMIT_POLICY, "policy_value": 100_000}]},
        )
        return "hung-bench", issued.token
    finally:
        await conn.close()


def _turn(provider: IsoKronMemoryProvider, n: int) -> float:
    started = time.perf_counter()
    provider.on_turn_start(n, f"turn {n}: what did we decide about exports?")
    provider.prefetch(f"turn {n}: what did we decide about exports?")
    provider.handle_tool_call("iso_node_create", {"node_type": "note", "title": f"bench {n}"})
    provider.sync_turn(f"turn {n}", f"Turn {n} recorded with cap_iso_node_create.")
    return time.perf_counter() - started


def _summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):7.1f} ms  p95 {p95:7.1f} ms  max {ms[-1]:7.1f} ms"


def run(turns: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="ik-hung-"))
    pgdata = base / "pgdata"
    server = start_embedded(pgdata, database="isokron")
    try:
        upgrade(server)
        dsns = SubstrateDSNs.derive(server)
        ws, token = asyncio.run(_workspace(server))
        clock = Clock()
        provider = IsoKronMemoryProvider(
            IsoKronProviderConfig(
                reader_dsn=dsns.reader,
                gateway_dsn=dsns.gateway,
                workspace_id=ws,
                service_token=token,
                hook_timeout_seconds=HOOK_TIMEOUT_SECONDS,
                cache_ttl_seconds=int(TTL_SECONDS),
            ),
            clock=clock,
        )
        provider.initialize("bench", hermes_home=str(base / "hermes"), agent_context="primary")
        assert provider.wait_ready(60), "the gateway did not start"
        _turn(provider, 0)  # warm: connections open
        baseline = []
        for n in range(1, turns + 1):
            clock.offset += TTL_SECONDS + 1
            baseline.append(_turn(provider, n))
        clock.offset += TTL_SECONDS + 1
        _signal_all(pgdata, signal.SIGSTOP)
        try:
            first = _turn(provider, turns + 1)
            hung = []
            for n in range(turns + 2, 2 * turns + 2):
                clock.offset += TTL_SECONDS + 1
                hung.append(_turn(provider, n))
        finally:
            thawed = time.monotonic()
            _signal_all(pgdata, signal.SIGCONT)
        writer = provider._writer
        assert writer is not None
        waiting = writer.pending
        while writer.pending and time.monotonic() - thawed < 120:
            time.sleep(0.02)
        recovery = time.monotonic() - thawed
        provider.shutdown()
    finally:
        stop_embedded(pgdata)
    return {
        "baseline": baseline,
        "first_hung": first,
        "breaker_open": hung,
        "waiting_at_thaw": waiting,
        "recovery": recovery,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provider_hung")
    parser.add_argument("--turns", type=int, default=30)
    args = parser.parse_args(argv)
    figures = run(args.turns)
    baseline, hung = figures["baseline"], figures["breaker_open"]
    print(f"provider time per turn ({args.turns} turns each; hook timeout {HOOK_TIMEOUT_SECONDS}s)")
    print(f"  baseline, database answering : {_summary(baseline)}")
    print(f"  first turn after SIGSTOP      : {figures['first_hung'] * 1000:7.1f} ms")
    print(f"  breaker open, database frozen : {_summary(hung)}")
    ratio = statistics.median(hung) / statistics.median(baseline)
    print(f"  breaker open / baseline (median): {ratio:.2f}")
    print(
        f"after SIGCONT: {figures['waiting_at_thaw']} writes waiting, all delivered in "
        f"{figures['recovery']:.2f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
