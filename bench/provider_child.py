"""The provider side of the provider benchmark, run in its own process (so its RSS is its own).

``python -m bench.provider_child isokron --reader-dsn … --gateway-dsn … --workspace …``
(token in ``KORA_SERVICE_TOKEN``) or ``python -m bench.provider_child holographic --db …``
drives one Hermes memory provider through the hooks a Hermes session calls, and prints one
line of JSON with the timings (seconds) on stdout.

Per turn a Hermes session calls ``on_turn_start`` (main thread), ``prefetch`` (a short-lived
thread) and ``sync_turn`` (the sync worker); here they are called back to back on one thread
and their sum is the per-turn overhead (``turn_cpu``: the process's CPU time over the same
span, every thread, e.g. a background refresh started in it). The reply does not name a
capability, so IsoKron's
``sync_turn`` writes nothing (a turn that writes is timed separately).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

USER_MESSAGE = "What did we decide about the export order and the retention job for workspace 4242?"
REPLY = "We decided the nightly export runs before the retention job; the runbook says so."
REPLY_THAT_WRITES = (
    "Recorded with cap_write_agent_scratchpad: the export runs before the retention job."
)
TTL_SECONDS = 60.0


class FakeClock:
    """A monotonic clock the benchmark can move forward (to expire the provider's cache)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e9


def _turns(
    provider: Any, samples: int, before: Callable[[], None], reply: str = REPLY
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        "on_turn_start": [],
        "prefetch": [],
        "sync_turn": [],
        "turn": [],
        "turn_cpu": [],
    }
    for i in range(samples):
        before()
        cpu = time.process_time()
        a = _time(lambda i=i: provider.on_turn_start(i + 1, USER_MESSAGE))
        b = _time(lambda: provider.prefetch(USER_MESSAGE, session_id=""))
        c = _time(lambda: provider.sync_turn(USER_MESSAGE, reply, session_id="bench-session"))
        out["turn_cpu"].append(time.process_time() - cpu)
        out["on_turn_start"].append(a)
        out["prefetch"].append(b)
        out["sync_turn"].append(c)
        out["turn"].append(a + b + c)
    return out


def run_isokron(args: argparse.Namespace) -> dict[str, Any]:
    from isokron.provider.config import IsoKronProviderConfig
    from isokron.provider.provider import IsoKronMemoryProvider

    clock = FakeClock()
    config = IsoKronProviderConfig(
        reader_dsn=args.reader_dsn,
        gateway_dsn=args.gateway_dsn,
        mcp_endpoint=args.mcp_endpoint,
        workspace_id=args.workspace,
        service_token=args.token,
        cache_ttl_seconds=int(TTL_SECONDS),
    )
    provider = IsoKronMemoryProvider(config, clock=clock)
    home = tempfile.mkdtemp(prefix="isokron-bench-hermes-")
    provider.initialize("bench-session", hermes_home=home, platform="cli", agent_context="primary")
    result: dict[str, Any] = {}
    try:
        assert provider.session_context() is not None, "the provider could not read its context"
        # Cold for the provider: caches flushed (a new conversation), connections open.
        cold = []
        for _ in range(args.samples):
            provider.on_session_switch("bench-session", reset=True)
            cold.append(_time(provider.session_context))
        result["session_context_after_flush"] = cold
        block = provider.system_prompt_block()
        assert "§" in block or len(block) > 200, "the prompt block looks empty"
        result["prompt_block_chars"] = len(block)
        warm = [_time(provider.system_prompt_block) for _ in range(max(args.samples * 10, 1000))]
        result["system_prompt_block_warm"] = warm
        result["turn_cache_fresh"] = _turns(provider, args.samples, lambda: None)

        def expire() -> None:
            clock.offset += TTL_SECONDS + 1

        result["turn_cache_expired"] = _turns(provider, args.samples, expire)
        if args.token:
            writes = max(args.samples // 10, 5)
            # The first call starts the gateway session; it is not timed.
            provider.sync_turn(USER_MESSAGE, REPLY_THAT_WRITES + " warm-up", session_id="w")
            result["turn_that_writes"] = _turns(
                provider, writes, lambda: None, REPLY_THAT_WRITES + f" {time.time_ns()}"
            )
    finally:
        provider.shutdown()
    return result


def run_holographic(args: argparse.Namespace) -> dict[str, Any]:
    from plugins.memory.holographic import HolographicMemoryProvider

    provider = HolographicMemoryProvider(config={"db_path": args.db})
    provider.initialize("bench-session")
    result: dict[str, Any] = {}
    try:
        warm = [_time(provider.system_prompt_block) for _ in range(max(args.samples * 2, 200))]
        result["system_prompt_block_warm"] = warm
        result["turn"] = _turns(provider, args.samples, lambda: None)
        result["prefetch_found"] = bool(provider.prefetch(USER_MESSAGE))
    finally:
        provider.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provider_child")
    parser.add_argument("which", choices=("isokron", "holographic"))
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--reader-dsn")
    parser.add_argument("--gateway-dsn")
    parser.add_argument("--mcp-endpoint", default="stdio")
    parser.add_argument("--workspace")
    parser.add_argument("--db")
    args = parser.parse_args(argv)
    args.token = None
    import os

    args.token = os.environ.get("KORA_SERVICE_TOKEN") or None
    logging.basicConfig(level=logging.CRITICAL)
    result = run_isokron(args) if args.which == "isokron" else run_holographic(args)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
