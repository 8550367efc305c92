"""What the provider writes, and how: every write is a gateway tool call, logged and chained.

A successful write logs ``[kora.chain.emit]`` (INFO) with the event it appended; a failed one
logs ``[kora.chain.emit.failed]`` at ERROR. Every write a hook or a model tool makes is first
stored, with its idempotency key, in the durable outbox (:mod:`isokron.provider.outbox`), and
only then sent; it leaves the outbox when the gateway has given its verdict. A refusal
(``[code] ...``) is final, except ``rate_limited``, which is retried after the time the
gateway names. While the gateway's breaker is open, writes are only stored, so hooks do not
wait on it; the watchdog delivers them as soon as the gateway answers again. A hook waits at
most ``hook_timeout_seconds`` for its write (the call is then cancelled and stays in the
outbox; a late landing is harmless thanks to the key).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isokron.provider.config import IsoKronProviderConfig
from isokron.provider.errors import (
    GatewayRefusedError,
    GatewayUnavailableError,
    IsoKronMCPInvocationError,
)
from isokron.provider.gateway_client import GatewayClient
from isokron.provider.health import Breaker
from isokron.provider.loop import IoLoop, LoopClosedError
from isokron.provider.outbox import Outbox, OutboxError, OutboxFullError, OutboxItem

log = logging.getLogger("isokron.provider.writes")

APPEND_EVENT_TOOL = "kora__append_event"
WRITE_SCRATCHPAD_TOOL = "kora__write_agent_scratchpad"
KORA_ACTION_RE = re.compile(r"\bcap_[a-z0-9_]+\b")
SUMMARY_MAX_BYTES = 2048
CONTENT_MAX_BYTES = 48 * 1024  # well inside policy.kora_max_payload_bytes (64 KiB per write)
TRUNCATED_MARKER = " [truncated]"
PROBE_TOOL = "kora__read_kora_capability_row"
RATE_LIMITED = "rate_limited"
_FLUSH_BATCH = 50
_MIN_SEND_SECONDS = 0.5
_RATE_LIMIT_DEFAULT_RETRY = 10.0
_RESULTS_KEPT = 256
#: Most older writes a hook delivers before its own; a longer backlog is the watchdog's.
INLINE_BACKLOG = 8
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


def queued_result(tool: str, arguments: dict[str, Any], reason: str) -> dict[str, Any]:
    """What a model tool call gets when its write is saved but not yet delivered."""
    return {
        "status": "queued",
        "queued": True,
        "tool": tool,
        "idempotency_key": arguments.get("idempotency_key"),
        "message": (
            "IsoKron saved this write on disk but could not deliver it yet "
            f"({reason}); it will be delivered exactly once when the gateway answers. "
            "Its ids are not known yet: do not retry it."
        ),
    }


class ChainWriter:
    """Accepts writes into the durable outbox and delivers them to the gateway, in order.

    ``write`` (hooks) and ``call`` (model tools) first store the write on disk, then, unless the
    gateway's breaker is open, deliver what is waiting within ``timeout``. What is not delivered
    then is delivered by the watchdog, by ``shutdown``, by the next provider on this Hermes
    home, or by ``isokron outbox flush``.
    """

    def __init__(
        self,
        gateway: GatewayClient,
        loop: IoLoop,
        outbox: Outbox,
        workspace_id: str,
        *,
        timeout: float,
        breaker: Breaker | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        self._gateway = gateway
        self._loop = loop
        self.outbox = outbox
        self.workspace_id = workspace_id
        self.timeout = timeout
        self.breaker = breaker or Breaker("gateway", log)
        self._on_delivered = on_delivered
        self._flush_lock = threading.Lock()
        self._results: OrderedDict[int, dict[str, Any] | GatewayRefusedError] = OrderedDict()
        self.delivered = 0
        #: Called when a hook leaves a write to the background delivery (the watchdog's wake).
        self.wake: Callable[[], None] | None = None

    @property
    def pending(self) -> int:
        """Writes of this workspace waiting in the outbox."""
        try:
            return self.outbox.count(self.workspace_id)
        except OutboxError:
            return 0

    def write(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        what: str,
        on_success: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any] | None:
        """Accept one write from a hook: on disk first, then delivered (with what waits before
        it) within ``timeout``. Returns the gateway's result, or None if it was refused or is
        still waiting. Never raises. ``arguments`` must carry its ``idempotency_key``.

        A few older writes waiting (at most :data:`INLINE_BACKLOG`) are delivered first, in
        order; with more, the hook does not deliver them itself (that could take its whole
        budget): it leaves them, and its own, to the watchdog, which keeps the order."""
        try:
            ahead = self.pending
            item_id = self.outbox.add(self.workspace_id, tool, arguments, what)
        except OutboxFullError:
            log.error("[kora.chain.emit.failed] %s: not accepted, the outbox is full", what)
            return None
        except OutboxError as exc:
            log.error("[kora.chain.emit.failed] %s: %s", what, exc)
            return None
        if not self.breaker.should_try() or ahead > INLINE_BACKLOG:
            log.debug("[kora.chain.emit.queued] %s (%d waiting before it)", what, ahead)
            if self.wake is not None:
                self.wake()
            return None
        outcome = self.flush(budget=self.timeout, until=item_id)
        if isinstance(outcome, dict):
            if on_success is not None:
                on_success(outcome)
            return outcome
        if outcome is None:
            log.debug("[kora.chain.emit.queued] %s (%d waiting)", what, self.pending)
        return None

    def call(self, tool: str, arguments: dict[str, Any], *, what: str) -> dict[str, Any]:
        """Accept one write from a model tool call: on disk first, then delivered within
        ``timeout``. Returns the gateway's result, or a ``queued`` result (saved, delivered
        later) when the gateway cannot be reached.

        Raises:
            GatewayRefusedError: refused (logged ``[kora.chain.emit.failed]``).
            GatewayUnavailableError: the outbox is full or unwritable (nothing was accepted).
        """
        try:
            item_id = self.outbox.add(self.workspace_id, tool, arguments, what)
        except OutboxError as exc:
            raise GatewayUnavailableError(tool, str(exc)) from exc
        if not self.breaker.should_try():
            return queued_result(
                tool, arguments, f"the gateway is unavailable: {self.breaker.last_error}"
            )
        wait = self.timeout
        if not self._gateway.connected:
            # a model's call may wait (a little) for a gateway that is still starting
            wait += min(self._gateway.connect_wait, TOOL_CONNECT_ALLOWANCE_SECONDS)
        outcome = self.flush(budget=wait, until=item_id)
        if isinstance(outcome, GatewayRefusedError):
            raise outcome
        if isinstance(outcome, dict):
            return outcome
        return queued_result(tool, arguments, self.breaker.last_error or "no answer in time")

    def flush(
        self, *, budget: float | None = None, until: int | None = None, force: bool = False
    ) -> dict[str, Any] | GatewayRefusedError | None:
        """Deliver waiting writes, oldest first, until one cannot be delivered, ``budget``
        seconds (default: the write timeout) are spent, or row ``until`` is settled.

        Unless ``force`` (shutdown, the watchdog's probe), nothing is tried while the breaker
        is open. Returns the verdict on row ``until`` if it was settled, else None.
        """
        if not force and not self.breaker.should_try():
            return None
        deadline = time.monotonic() + (self.timeout if budget is None else budget)
        if not self._flush_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            return self._results.get(until) if until is not None else None
        try:
            if until is not None and until in self._results:
                return self._results[until]
            with self.outbox.delivery_lock(self.workspace_id) as mine:
                if not mine:
                    return None  # another process is delivering this outbox
                self._deliver(deadline, until)
        except OutboxError as exc:
            log.error("[kora.outbox.failed] %s", exc)
        finally:
            self._flush_lock.release()
        return self._results.get(until) if until is not None else None

    def _deliver(self, deadline: float, until: int | None) -> None:
        sent = 0
        try:
            while True:
                items = self.outbox.pending(self.workspace_id, _FLUSH_BATCH)
                if not items:
                    return
                for item in items:
                    remaining = deadline - time.monotonic()
                    if remaining <= _MIN_SEND_SECONDS / 10 or item.not_before > time.time():
                        return
                    if not self._deliver_one(item, min(self.timeout, remaining)):
                        return
                    sent += 1
                    if until is not None and item.id == until:
                        return
        finally:
            if sent:
                if self._on_delivered is not None:
                    self._on_delivered()
                log.info(
                    "[kora.chain.emit.flushed] %d write(s) settled; %d waiting", sent, self.pending
                )

    def _deliver_one(self, item: OutboxItem, wait: float) -> bool:
        """Send one row; True when it is settled (delivered or finally refused)."""
        try:
            result = self._send(item, timeout=wait)
        except GatewayRefusedError as exc:
            if exc.code == RATE_LIMITED:
                retry = exc.retry_after_seconds or _RATE_LIMIT_DEFAULT_RETRY
                self.outbox.retry_later(item, str(exc), not_before=time.time() + retry)
                return False
            self.outbox.refused(item, str(exc))
            self._remember(item.id, exc)
            return True
        except GatewayUnavailableError as exc:
            self.outbox.retry_later(item, str(exc), not_before=0.0)
            if not exc.starting:
                self.breaker.failed(exc)
            return False
        self.outbox.delivered(item, replayed=bool(result.get("replayed")))
        self.delivered += 1
        self._remember(item.id, result)
        return True

    def _remember(self, item_id: int, outcome: dict[str, Any] | GatewayRefusedError) -> None:
        self._results[item_id] = outcome
        while len(self._results) > _RESULTS_KEPT:
            self._results.popitem(last=False)

    def wait_ready(self, timeout: float) -> bool:
        """Block until the gateway session is open (at most ``timeout`` s), then deliver what
        is waiting; True when writes go out now."""
        try:
            ready = self._loop.run(self._gateway.wait_connected(timeout), timeout + 1.0)
        except (TimeoutError, LoopClosedError):
            return False
        if ready:
            self.breaker.succeeded()
            self.flush()
        return ready

    def probe(self, timeout: float) -> bool:
        """The watchdog's check of an open breaker with nothing waiting: one cheap gateway
        read that needs the gateway and its database; closes the breaker on success."""
        try:
            self._loop.run(
                self._gateway.call(
                    PROBE_TOOL, {"workspace_id": self.workspace_id}, timeout=timeout
                ),
                timeout,
                cancel_on_timeout=True,
            )
        except (TimeoutError, LoopClosedError, IsoKronMCPInvocationError) as exc:
            if isinstance(exc, GatewayRefusedError):
                self.breaker.succeeded()  # a verdict: the gateway and its database answer
                return True
            log.debug("[isokron.provider.gateway.probe_failed] %s", exc)
            return False
        self.breaker.succeeded()
        return True

    # ------------------------------------------------------------------ internals
    def _send(self, item: OutboxItem, *, timeout: float) -> dict[str, Any]:
        try:
            result = self._loop.run(
                self._gateway.call(item.tool, item.arguments, timeout=timeout),
                timeout,
                cancel_on_timeout=True,
            )
        except TimeoutError as exc:
            starting = self._gateway.connecting
            what = "the gateway is still starting" if starting else "no answer"
            raise GatewayUnavailableError(
                item.tool, f"{what} within {timeout:.1f}s", starting=starting
            ) from exc
        except LoopClosedError as exc:
            raise GatewayUnavailableError(item.tool, "the provider has been shut down") from exc
        except GatewayRefusedError as exc:
            self.breaker.succeeded()
            if exc.code != RATE_LIMITED:
                log.error("[kora.chain.emit.failed] %s refused: %s", item.what, exc)
            raise
        self.breaker.succeeded()
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
        return result


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one ``deliver_outbox`` run did (for ``isokron outbox flush``)."""

    workspace_id: str
    waiting_before: int
    delivered: int
    waiting_after: int
    connected: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "waiting_before": self.waiting_before,
            "delivered": self.delivered,
            "waiting_after": self.waiting_after,
            "gateway_reached": self.connected,
        }


def deliver_outbox(
    config: IsoKronProviderConfig, outbox: Outbox, *, budget: float, log_dir: Path | None = None
) -> DeliveryReport:
    """Deliver the waiting writes of ``config``'s workspace with its token, within ``budget``
    seconds (the operator's ``isokron outbox flush``; a running provider does the same)."""
    assert config.workspace_id is not None
    loop = IoLoop(name="isokron-outbox-flush")
    gateway = GatewayClient(config, log_dir=log_dir)
    writer = ChainWriter(
        gateway, loop, outbox, config.workspace_id, timeout=config.hook_timeout_seconds
    )
    before = writer.pending
    connected = False
    try:
        if before:
            started = time.monotonic()
            connected = writer.wait_ready(min(budget, gateway.connect_wait))
            remaining = budget - (time.monotonic() - started)
            if remaining > 0:
                writer.flush(budget=remaining, force=True)
    finally:
        loop.stop(cleanup=gateway.close())
    return DeliveryReport(config.workspace_id, before, writer.delivered, writer.pending, connected)
