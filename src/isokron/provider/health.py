"""Circuit breakers for the two things the provider depends on: PostgreSQL and the gateway.

A breaker is closed while its dependency answers. The first failure of an outage (a refused
connection, a timeout) opens it and is logged once at ERROR
(``[isokron.provider.<name>.unavailable]``, one line, no traceback). While it is open, hooks
do not try the dependency at all: reads answer from the cache, writes go to the outbox, so no
hook waits on a dead or hung server. Recovery does not wait out a back-off: the provider's
watchdog (:mod:`isokron.provider.watchdog`) probes an open breaker every
:data:`PROBE_INTERVAL_SECONDS` with a short timeout, and the first success closes it and logs
``[isokron.provider.<name>.recovered]`` once at INFO.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: How often the watchdog probes an open breaker.
PROBE_INTERVAL_SECONDS = 0.5
#: The longest one probe may take (a hung server costs the watchdog this, never a hook).
PROBE_TIMEOUT_SECONDS = 1.0


class Breaker:
    """Open/closed state of one dependency, with one log line per outage and per recovery."""

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._log = logger
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self.failures = 0
        self.outages = 0
        self.last_error: str | None = None

    @property
    def down(self) -> bool:
        """True between a failure and the next success (the breaker is open)."""
        with self._lock:
            return self._down_since is not None

    def should_try(self) -> bool:
        """True when closed: a hook may use the dependency now."""
        return not self.down

    def failed(self, error: BaseException | str) -> None:
        """Record a failure; opens the breaker and logs the first one of an outage."""
        text = str(error) or error.__class__.__name__
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = self._clock()
                self.outages += 1
            self.failures += 1
            self.last_error = text
        if first:
            self._log.error(
                "[isokron.provider.%s.unavailable] %s; hooks carry on without it (cache and "
                "outbox) and it is probed every %.1fs",
                self.name,
                text,
                PROBE_INTERVAL_SECONDS,
            )
        else:
            self._log.debug("[isokron.provider.%s.still_down] %s", self.name, text)

    def succeeded(self) -> None:
        """Record a success; closes the breaker and logs the recovery if it was open."""
        with self._lock:
            since = self._down_since
            outage = self._clock() - since if since is not None else 0.0
            failures = self.failures
            self._down_since = None
            self.failures = 0
            self.last_error = None
        if since is not None:
            self._log.info(
                "[isokron.provider.%s.recovered] reachable again after %.1fs (%d failed attempts)",
                self.name,
                outage,
                failures,
            )
