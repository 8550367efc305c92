"""The TTL cache (injectable clock), the circuit breaker (log once per outage and per
recovery), and the I/O loop."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from isokron.provider.cache import TTLCache
from isokron.provider.health import Breaker
from isokron.provider.loop import IoLoop, LoopClosedError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ttl_cache_hits_within_ttl_and_misses_after_with_stale_kept() -> None:
    clock = FakeClock()
    cache = TTLCache(60, clock=clock)
    cache.put("ws", "policies", ("p",))
    assert cache.get("ws", "policies") == ("p",)
    clock.now = 59.9
    assert cache.has("ws", "policies")
    clock.now = 60
    assert cache.get("ws", "policies") is None and not cache.has("ws", "policies")
    assert cache.get_stale("ws", "policies") == ("p",)  # for when the substrate is down
    assert cache.get("other", "policies") is None  # per workspace


def test_ttl_cache_invalidate_and_clear() -> None:
    cache = TTLCache(60, clock=FakeClock())
    for name in ("a", "b", "c"):
        cache.put("ws", name, name)
    cache.put("ws2", "a", "a")
    cache.invalidate("ws", ["a", "missing"])
    assert not cache.has("ws", "a") and cache.has("ws", "b") and cache.has("ws2", "a")
    cache.invalidate("ws")
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0


def test_ttl_zero_never_serves_fresh() -> None:
    cache = TTLCache(0, clock=FakeClock())
    cache.put("ws", "x", 1)
    assert not cache.has("ws", "x") and cache.get_stale("ws", "x") == 1
    with pytest.raises(ValueError):
        TTLCache(-1)


def test_breaker_opens_on_first_failure_logs_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    logger = logging.getLogger("isokron.provider.test_breaker")
    breaker = Breaker("substrate", logger, clock=clock)
    caplog.set_level(logging.DEBUG, logger=logger.name)
    assert breaker.should_try() and not breaker.down
    for _ in range(5):
        breaker.failed(ConnectionRefusedError("refused"))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "[isokron.provider.substrate.unavailable]" in errors[0].getMessage()
    assert errors[0].exc_info is None  # one line, no traceback
    # Open: no hook tries, however much time passes (the watchdog's probe closes it).
    clock.now = 10_000.0
    assert breaker.down and not breaker.should_try()
    breaker.succeeded()
    breaker.succeeded()
    recovered = [
        r for r in caplog.records if "[isokron.provider.substrate.recovered]" in r.getMessage()
    ]
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO
    assert not breaker.down and breaker.failures == 0 and breaker.outages == 1


def test_io_loop_runs_coroutines_from_any_thread_and_stops() -> None:
    loop = IoLoop(name="test-io")

    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(loop.run(where(), 5))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["test-io"] * 4

    with pytest.raises(TimeoutError):
        loop.run(asyncio.sleep(10), 0.05, cancel_on_timeout=True)

    async def cleanup() -> None:
        results.append("cleaned")

    loop.stop(cleanup=cleanup())
    assert results[-1] == "cleaned" and not loop.running
    with pytest.raises(LoopClosedError):
        loop.run(where(), 1)
