"""A per-workspace TTL cache of the provider's reads, with an injectable clock.

Keys are ``(workspace_id, read_name)``. Values are the frozen models of
:mod:`isokron.substrate.models`, so threads can share them. A TTL of 0 disables caching
(every fresh lookup misses; the last value stays available as stale). The cache is
thread-safe; it never holds its lock while reading.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]

#: The names of the cached reads (one per substrate read of a session).
CHARTER = "charter"
POLICIES = "policies"
CAPABILITIES = "capabilities"
OWN_SCRATCHPAD = "own_scratchpad"
CROSS_SCRATCHPAD = "cross_agent_scratchpad"
EVENTS = "recent_events"
CONSTITUTION = "constitution"
ALL_READS = (
    CHARTER,
    POLICIES,
    CAPABILITIES,
    OWN_SCRATCHPAD,
    CROSS_SCRATCHPAD,
    EVENTS,
    CONSTITUTION,
)


@dataclass(frozen=True, slots=True)
class _Entry:
    value: Any
    stored_at: float


class TTLCache:
    """Values that expire ``ttl_seconds`` after they were stored (``clock`` is monotonic)."""

    def __init__(self, ttl_seconds: float, *, clock: Clock = time.monotonic) -> None:
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must be >= 0")
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def get(self, workspace_id: str, name: str, default: Any = None) -> Any:
        """The fresh value stored under the key, else ``default``.

        An expired entry is kept (see :meth:`get_stale`) until it is replaced or invalidated.
        """
        with self._lock:
            entry = self._entries.get((workspace_id, name))
            if entry is None or self._clock() - entry.stored_at >= self.ttl_seconds:
                return default
            return entry.value

    def has(self, workspace_id: str, name: str) -> bool:
        """True if a fresh value is stored under the key."""
        marker = object()
        return self.get(workspace_id, name, marker) is not marker

    def get_stale(self, workspace_id: str, name: str, default: Any = None) -> Any:
        """The last value stored under the key even if expired (for when the substrate is down)."""
        with self._lock:
            entry = self._entries.get((workspace_id, name))
            return default if entry is None else entry.value

    def stored_at(self, workspace_id: str, name: str) -> float | None:
        """The clock reading when the key's value was stored, or None."""
        with self._lock:
            entry = self._entries.get((workspace_id, name))
            return None if entry is None else entry.stored_at

    def put(self, workspace_id: str, name: str, value: Any) -> None:
        """Store ``value`` now (with a TTL of 0 it is only ever served by :meth:`get_stale`)."""
        with self._lock:
            self._entries[(workspace_id, name)] = _Entry(value, self._clock())

    def invalidate(self, workspace_id: str, names: Iterable[str] | None = None) -> None:
        """Drop the named entries of a workspace (all of them when ``names`` is None)."""
        with self._lock:
            if names is None:
                for key in [k for k in self._entries if k[0] == workspace_id]:
                    del self._entries[key]
                return
            for name in names:
                self._entries.pop((workspace_id, name), None)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
