"""What the provider writes, and how: every write is a gateway tool call, logged and chained.

A successful write logs ``[kora.chain.emit]`` (INFO) with the event it appended; a failed one
logs ``[kora.chain.emit.failed]`` at ERROR. A refusal (``[code] ...``) is final. A write that
fails because the gateway is unreachable is kept, with its idempotency key, in a bounded
in-memory outbox and sent again once the gateway answers; the key makes the retry safe (the
gateway returns the first result if the original did land). While the gateway is known to be
down, writes go straight to the outbox, so hooks do not wait on it; only the first failure of
an outage is logged at ERROR. A hook waits at most ``hook_timeout_seconds`` for a write (the
call is then cancelled and queued; a late landing is harmless thanks to the key).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from isokron.provider.errors import GatewayRefusedError, GatewayUnavailableError
from isokron.provider.gateway_client import GatewayClient
from isokron.provider.health import Outage
from isokron.provider.loop import IoLoop, LoopClosedError

log = logging.getLogger("isokron.provider.writes")

APPEND_EVENT_TOOL = "kora__append_event"
WRITE_SCRATCHPAD_TOOL = "kora__write_agent_scratchpad"
KORA_ACTION_RE = re.compile(r"\bcap_[a-z0-9_]+\b")
SUMMARY_MAX_BYTES = 2048
CONTENT_MAX_BYTES = 48 * 1024  # well inside policy.kora_max_payload_bytes (64 KiB per write)
TRUNCATED_MARKER = " [truncated]"
OUTBOX_MAX = 500
_FLUSH_BATCH = 50
_MIN_SEND_SECONDS = 0.5
#: Extra seconds a model's tool call waits for a gateway session that is still opening.
TOOL_CONNECT_ALLOWANCE_SECONDS = 15.0


def looks_like_kora_action(text: str) -> bool:
    """True when ``text`` names a capability (``cap_…`` as a whole word)."""
    return bool(KORA_ACTION_RE.search(text or ""))


def kora_actions(text: str) -> list[str]:
    """The distinct capability names ``text`` mentions, in order of appearance."""
    return list(dict.fromkeys(KORA_ACTION_RE.findall(text or "")))


def truncate_utf8(text: str, max_bytes: int, marker: str = TRUNCATED_MARKER) -> str:
    """``text`` if it fits in ``max_bytes`` UTF-8 bytes, else cut (on a character) + ``marker``."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    room = max_bytes - len(marker.encode("utf-8"))
    return data[: max(room, 0)].decode("utf-8", errors="ignore") + marker


def summarize_for_scratchpad(text: str) -> str:
    """A scratchpad summary: the text, capped at 2 KB with a ``[truncated]`` marker."""
    return truncate_utf8(text.strip() or "(empty)", SUMMARY_MAX_BYTES)


def cap_content(text: str) -> str:
    """Scratchpad content capped so that one write stays inside the gateway's size policy."""
    return truncate_utf8(text, CONTENT_MAX_BYTES)


def new_idempotency_key(prefix: str) -> str:
    """A fresh idempotency key; ``prefix`` makes it readable in the gateway's records."""
    return f"{prefix}:{uuid.uuid4().hex}"


def idempotency_key(kind: str, session: str, *parts: str) -> str:
    """A deterministic idempotency key: the same hook call for the same session writes once."""
    digest = hashlib.sha256("\x1f".join((session, *parts)).encode("utf-8")).hexdigest()[:32]
    return f"{kind}:{digest}"


@dataclass(slots=True)
class PendingWrite:
    """A write waiting in the outbox (its idempotency key is already in ``arguments``)."""

    tool: str
    arguments: dict[str, Any]
    what: str
    on_success: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)


class ChainWriter:
    """Sends writes to the gateway from hook threads, with logging, outbox and outage tracking."""

    def __init__(
        self, gateway: GatewayClient, loop: IoLoop, *, timeout: float, outage: Outage | None = None
    ) -> None:
        self._gateway = gateway
        self._loop = loop
        self.timeout = timeout
        self.outage = outage or Outage("gateway", log)
        self._outbox: deque[PendingWrite] = deque()
        self._outbox_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Writes waiting in the outbox."""
        with self._outbox_lock:
            return len(self._outbox)

    def write(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        what: str,
        on_success: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any] | None:
        """Send one write (after what is queued), within ``timeout`` in all; returns the
        gateway's result, or None if it was refused or queued. Never raises.

        ``arguments`` must already carry its ``idempotency_key``.
        """
        item = PendingWrite(tool, arguments, what, on_success)
        if not self.outage.should_try():
            self._enqueue(item)
            log.debug("[kora.chain.emit.queued] %s (gateway unavailable)", what)
            return None
        started = time.monotonic()
        self.flush(budget=self.timeout / 2)
        remaining = self.timeout - (time.monotonic() - started)
        if self.pending or remaining < _MIN_SEND_SECONDS:
            self._enqueue(item)  # behind older writes, so the chain keeps their order
            log.debug("[kora.chain.emit.queued] %s (behind %d older writes)", what, self.pending)
            return None
        try:
            return self._send(item, timeout=remaining)
        except GatewayRefusedError:
            return None
        except GatewayUnavailableError as exc:
            self._enqueue(item)
            if exc.starting:
                log.debug("[kora.chain.emit.queued] %s: the gateway is still starting", what)
                return None
            first = not self.outage.down
            self.outage.failed(exc)
            if first:
                log.error(
                    "[kora.chain.emit.failed] %s: %s; queued, it will be sent again when the "
                    "gateway answers",
                    what,
                    exc,
                )
            else:
                log.debug("[kora.chain.emit.queued] %s: %s", what, exc)
            return None

    def call(self, tool: str, arguments: dict[str, Any], *, what: str) -> dict[str, Any]:
        """Send one write for a model tool call; failures are raised for the tool to report.

        Raises:
            GatewayRefusedError: refused (logged ``[kora.chain.emit.failed]``).
            GatewayUnavailableError: the gateway could not be reached (not queued).
        """
        if not self.outage.should_try():
            raise GatewayUnavailableError(
                tool, f"the gateway is unavailable: {self.outage.last_error}"
            )
        self.flush(budget=self.timeout / 2)
        wait = self.timeout
        if not self._gateway.connected:
            # a model's call may wait (a little) for a gateway that is still starting
            wait += min(self._gateway.connect_wait, TOOL_CONNECT_ALLOWANCE_SECONDS)
        try:
            return self._send(PendingWrite(tool, arguments, what), timeout=wait)
        except GatewayUnavailableError as exc:
            first = not self.outage.down
            self.outage.failed(exc)
            (log.error if first else log.debug)("[kora.chain.emit.failed] %s: %s", what, exc)
            raise

    def flush(self, *, budget: float | None = None, max_items: int = _FLUSH_BATCH) -> int:
        """Send queued writes, oldest first, until one fails to reach the gateway or ``budget``
        seconds (default: the write timeout) are spent; returns how many were settled."""
        if not self.pending or not self.outage.should_try():
            return 0
        if not self._flush_lock.acquire(blocking=False):
            return 0
        deadline = time.monotonic() + (self.timeout if budget is None else budget)
        done = 0
        try:
            while done < max_items:
                remaining = deadline - time.monotonic()
                if remaining <= 0.05:
                    break
                with self._outbox_lock:
                    if not self._outbox:
                        break
                    item = self._outbox[0]
                try:
                    self._send(item, timeout=min(self.timeout, remaining))
                except GatewayRefusedError:
                    pass
                except GatewayUnavailableError as exc:
                    if not exc.starting:
                        self.outage.failed(exc)
                    break
                with self._outbox_lock:
                    if self._outbox and self._outbox[0] is item:
                        self._outbox.popleft()
                done += 1
        finally:
            self._flush_lock.release()
        if done:
            log.info(
                "[kora.chain.emit.flushed] sent %d queued write(s); %d still queued",
                done,
                self.pending,
            )
        return done

    def wait_ready(self, timeout: float) -> bool:
        """Block until the gateway session is open (at most ``timeout`` s), then send what is
        queued; True when writes go out now."""
        try:
            ready = self._loop.run(self._gateway.wait_connected(timeout), timeout + 1.0)
        except (TimeoutError, LoopClosedError):
            return False
        if ready:
            self.outage.succeeded()
            self.flush()
        return ready

    def drop_pending(self) -> int:
        """Forget the outbox (at shutdown, after a last flush); logs what is lost at ERROR."""
        with self._outbox_lock:
            lost = len(self._outbox)
            whats = [p.what for p in list(self._outbox)[:5]]
            self._outbox.clear()
        if lost:
            self.dropped += lost
            log.error(
                "[kora.chain.emit.dropped] %d queued write(s) never reached the gateway (%s)",
                lost,
                "; ".join(whats),
            )
        return lost

    # ------------------------------------------------------------------ internals
    def _send(self, item: PendingWrite, *, timeout: float | None = None) -> dict[str, Any]:
        wait = self.timeout if timeout is None else timeout
        try:
            result = self._loop.run(
                self._gateway.call(item.tool, item.arguments, timeout=wait),
                wait,
                cancel_on_timeout=True,
            )
        except TimeoutError as exc:
            starting = self._gateway.connecting
            what = "the gateway is still starting" if starting else "no answer"
            raise GatewayUnavailableError(
                item.tool, f"{what} within {wait:.1f}s", starting=starting
            ) from exc
        except LoopClosedError as exc:
            raise GatewayUnavailableError(item.tool, "the provider has been shut down") from exc
        except GatewayRefusedError as exc:
            self.outage.succeeded()
            log.error("[kora.chain.emit.failed] %s refused: %s", item.what, exc)
            raise
        self.outage.succeeded()
        note = " (replayed)" if result.get("replayed") else ""
        if result.get("escalated"):
            note = f" (escalated by rule {result.get('rule_id')}: waits for an operator)"
        log.info(
            "[kora.chain.emit] %s event_id=%s seq=%s%s",
            item.what,
            result.get("event_id"),
            result.get("seq", "?"),
            note,
        )
        if item.on_success is not None:
            item.on_success(result)
        return result

    def _enqueue(self, item: PendingWrite) -> None:
        key = item.arguments.get("idempotency_key")
        with self._outbox_lock:
            if key is not None and any(
                p.arguments.get("idempotency_key") == key for p in self._outbox
            ):
                return  # the same write is already waiting (e.g. a hook called twice)
            if len(self._outbox) >= OUTBOX_MAX:
                old = self._outbox.popleft()
                self.dropped += 1
                log.error(
                    "[kora.chain.emit.dropped] outbox full (%d); dropped %s", OUTBOX_MAX, old.what
                )
            self._outbox.append(item)
