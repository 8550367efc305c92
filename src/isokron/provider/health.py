"""Outage tracking for the two things the provider depends on: PostgreSQL and the gateway.

When a dependency fails, the first failure is logged once at ERROR
(``[isokron.provider.<name>.unavailable]``); while it stays down, further attempts are skipped
until a retry time that backs off from ``BASE_RETRY_SECONDS`` to ``MAX_RETRY_SECONDS``, so a
hook returns at once instead of waiting on a dead server each time. The first success after an
outage logs ``[isokron.provider.<name>.recovered]`` at INFO. The provider needs no restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

BASE_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


class Outage:
    """Up/down state of one dependency, with log-once and a backed-off retry time."""

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
        base_retry: float = BASE_RETRY_SECONDS,
        max_retry: float = MAX_RETRY_SECONDS,
    ) -> None:
        self.name = name
        self._log = logger
        self._clock = clock
        self._base = base_retry
        self._max = max_retry
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._delay = base_retry
        self.failures = 0
        self.last_error: str | None = None

    @property
    def down(self) -> bool:
        """True between a failure and the next success."""
        with self._lock:
            return self._down_since is not None

    def should_try(self) -> bool:
        """True when up, or when down and the retry time has come."""
        with self._lock:
            return self._down_since is None or self._clock() >= self._retry_at

    def failed(self, error: BaseException | str) -> None:
        """Record a failure; logs only the first one of an outage."""
        text = str(error) or error.__class__.__name__
        with self._lock:
            now = self._clock()
            first = self._down_since is None
            if first:
                self._down_since = now
                self._delay = self._base
            else:
                self._delay = min(self._delay * 2, self._max)
            self._retry_at = now + self._delay
            self.failures += 1
            self.last_error = text
        if first:
            self._log.error(
                "[isokron.provider.%s.unavailable] %s; hooks carry on without it and retry "
                "in the background (next attempt in %.0fs)",
                self.name,
                text,
                self._delay,
            )
        else:
            self._log.debug("[isokron.provider.%s.still_down] %s", self.name, text)

    def succeeded(self) -> None:
        """Record a success; logs the recovery if there was an outage."""
        with self._lock:
            since = self._down_since
            was_down = since is not None
            outage = self._clock() - since if since is not None else 0.0
            failures = self.failures
            self._down_since = None
            self._retry_at = 0.0
            self._delay = self._base
            self.failures = 0
            self.last_error = None
        if was_down:
            self._log.info(
                "[isokron.provider.%s.recovered] reachable again after %.1fs (%d failed attempts)",
                self.name,
                outage,
                failures,
            )
