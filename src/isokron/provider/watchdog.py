"""The provider's watchdog: a daemon thread that probes open breakers and empties the outbox.

Every :data:`~isokron.provider.health.PROBE_INTERVAL_SECONDS` it

* probes PostgreSQL (``SELECT 1``, bounded) while the substrate's breaker is open, and on
  success closes it and starts re-reading what the cache holds (the identity included);
* delivers waiting writes from the outbox; while the gateway's breaker is open the first
  delivery attempt is the probe, so the writes of an outage go out as soon as the gateway
  and its database answer again (within about a second), not after a back-off;
* with nothing waiting and the gateway's breaker open, probes the gateway with one cheap read.

A gateway the provider starts over stdio needs the database the reader uses: while that is
down, the gateway is not probed (each probe would start a process that exits at once).

Hooks never wait for the watchdog; it is the one place that waits on a dependency that is down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from isokron.errors import IsoKronError
from isokron.provider.health import PROBE_INTERVAL_SECONDS, PROBE_TIMEOUT_SECONDS
from isokron.provider.outbox import OutboxError
from isokron.provider.reader import SubstrateReader
from isokron.provider.writes import ChainWriter

log = logging.getLogger("isokron.provider.watchdog")

#: Longest one round of outbox delivery by the watchdog takes before it checks again.
FLUSH_BUDGET_SECONDS = 3.0
THREAD_NAME = "isokron-provider-watchdog"


class Watchdog:
    """Two daemon threads (one per dependency, so a hung gateway never delays the database's
    probe, and the reverse) that probe and deliver until :meth:`stop`."""

    def __init__(
        self,
        reader: SubstrateReader | None,
        writer: ChainWriter | None,
        *,
        on_substrate_recovered: Callable[[], None] | None = None,
        interval: float = PROBE_INTERVAL_SECONDS,
        gateway_needs_substrate: bool = False,
    ) -> None:
        self._reader = reader
        self._gateway_needs_substrate = gateway_needs_substrate
        self._writer = writer
        self._on_substrate_recovered = on_substrate_recovered
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        rounds = [(f"{THREAD_NAME}-substrate", self.substrate_round)]
        if self._writer is not None:
            rounds.append((f"{THREAD_NAME}-gateway", self.gateway_round))
        for name, round_ in rounds:
            thread = threading.Thread(target=self._run, args=(round_,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Run a round now (e.g. a write was queued while the gateway is down)."""
        self._wake.set()

    def stop(self, timeout: float = FLUSH_BUDGET_SECONDS + 2.0) -> None:
        self._stop.set()
        self._wake.set()
        threads, self._threads = self._threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _run(self, round_: Callable[[], None]) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                round_()
            except (IsoKronError, OutboxError, RuntimeError, OSError) as exc:
                log.debug("[isokron.provider.watchdog.round_failed] %s", exc)

    def substrate_round(self) -> None:
        """Probe PostgreSQL while its breaker is open; re-read everything once it answers."""
        reader = self._reader
        if reader is not None and reader.breaker.down and reader.probe(PROBE_TIMEOUT_SECONDS):
            if self._on_substrate_recovered is not None:
                self._on_substrate_recovered()

    def gateway_round(self) -> None:
        """Deliver what waits (the first attempt is the probe while the breaker is open); with
        nothing waiting and the breaker open, probe the gateway with one cheap read."""
        writer = self._writer
        if writer is None or self._stop.is_set():
            return
        if self._gateway_needs_substrate and writer.breaker.down:
            reader = self._reader
            if reader is not None and reader.breaker.down:
                # A gateway started over stdio needs the same database: while it is down, each
                # attempt would start a gateway process that exits at once. Wait for it.
                return
        if writer.pending:
            writer.flush(budget=FLUSH_BUDGET_SECONDS, force=True)
        elif writer.breaker.down:
            writer.probe(PROBE_TIMEOUT_SECONDS)
