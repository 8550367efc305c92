"""``IsoKronMemoryProvider``: Hermes Agent's memory, governed by the IsoKron substrate.

Reads go directly to PostgreSQL through the reader role (:mod:`isokron.provider.reader`);
writes go through the IsoKron gateway as MCP tool calls (:mod:`isokron.provider.writes`).
Hermes calls the hooks synchronously from several threads; each hook submits its work to the
provider's own loop thread and waits with a bound below Hermes's 8 s prefetch budget.

No hook raises into the host: each one catches what escapes at its boundary and logs it
(``[isokron.provider.hook_failed]``). Writes happen only in the ``primary`` agent context.

Hooks and what they do:

* ``initialize`` — config, workspace, session id; starts the reads and the gateway session in
  the background.
* ``system_prompt_block`` — the §1–§6 identity block (charter fails closed).
* ``on_turn_start`` — keeps the session context fresh (one statement; once the cache has
  expired, in the background after ``prefetch``: the previous values are served meanwhile).
* ``prefetch`` — knowledge-graph nodes matching the user's message.
* ``sync_turn`` — a turn that names a capability (``cap_…``) becomes a scratchpad entry.
* ``on_memory_write`` — mirrors a built-in memory write as a ``reasoning_trail`` entry.
* ``on_delegation`` — a ``handoff_note`` entry plus a ``kora.handoff.to_claude_pm`` event.
* ``on_session_end`` — a ``kora.session.ended`` event (once per session).
* ``on_session_switch`` — follows the session id; ``reset=True`` flushes the caches.
* ``on_pre_compress`` — nothing to add (the substrate is the record).
* ``shutdown`` — delivers what waits in the outbox (within :data:`SHUTDOWN_FLUSH_SECONDS`,
  whatever the breaker says; what is left stays on disk for the next start or
  ``isokron outbox flush``), closes the pool and the gateway session.

Every write is on disk (the outbox, :mod:`isokron.provider.outbox`) before its hook returns. A
dead or hung dependency opens its breaker (:mod:`isokron.provider.health`) after the first
failure or timeout; hooks then answer from the cache and the outbox without waiting, and the
watchdog (:mod:`isokron.provider.watchdog`) probes it and delivers as soon as it is back. If
the system prompt of a session was built while the identity could not be verified, ``prefetch``
carries the re-verified block once the substrate answers again.

The class is the Hermes-facing facade; its parts live in their own modules:
:mod:`~isokron.provider.session_state` (session id, agent context, model, turn),
:mod:`~isokron.provider.resources` (what ``initialize`` opens, starts and releases),
:mod:`~isokron.provider.identity_block` (the block's memo and re-verification) and
:mod:`~isokron.provider.hook_writes` (the entries and events the write hooks write).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from isokron.errors import IsoKronError
from isokron.provider import tools
from isokron.provider.cache import Clock, TTLCache
from isokron.provider.config import (
    IsoKronProviderConfig,
    save_config_file,
)
from isokron.provider.hook_writes import HANDOFF_EVENT as HANDOFF_EVENT
from isokron.provider.hook_writes import SESSION_ENDED_EVENT as SESSION_ENDED_EVENT
from isokron.provider.hook_writes import HookWrites
from isokron.provider.host import HostMemoryProvider, hermes_home_default
from isokron.provider.identity_block import REVERIFIED_HEADING as REVERIFIED_HEADING
from isokron.provider.identity_block import IdentityBlock
from isokron.provider.loop import IoLoop
from isokron.provider.reader import SubstrateReader
from isokron.provider.resources import (
    SessionResources,
    close_resources,
    final_flush,
    session_config,
    unavailable_reason,
)
from isokron.provider.session_state import PRIMARY as PRIMARY
from isokron.provider.session_state import SessionState
from isokron.provider.session_state import hermes_model as hermes_model
from isokron.provider.setup import config_schema, post_setup, status_config
from isokron.provider.writes import ChainWriter
from isokron.substrate.models import KoraSessionContext

log = logging.getLogger("isokron.provider")

PROVIDER_NAME = "isokron"
#: How long ``shutdown`` spends delivering the outbox, whatever the breaker says (Hermes joins
#: no thread around ``shutdown``; what is not delivered by then stays on disk).
SHUTDOWN_FLUSH_SECONDS = 5.0
#: The same when a second ``initialize`` replaces a session's resources.
_REPLACE_FLUSH_SECONDS = 1.0

F = TypeVar("F", bound=Callable[..., Any])


def _hook(default: Any = None) -> Callable[[F], F]:
    """Run a hook so that nothing escapes into the host; ``default`` is returned on failure."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def guarded(self: IsoKronMemoryProvider, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the host boundary: log, never raise
                self._log_once(
                    f"hook:{fn.__name__}:{exc.__class__.__name__}",
                    logging.ERROR,
                    "[isokron.provider.hook_failed] %s: %s: %s",
                    fn.__name__,
                    exc.__class__.__name__,
                    exc,
                    exc_info=not isinstance(exc, IsoKronError),
                )
                return default() if callable(default) else default

        return guarded  # type: ignore[return-value]

    return wrap


class IsoKronMemoryProvider(HostMemoryProvider):
    """Hermes Agent memory provider backed by the IsoKron substrate and gateway."""

    def __init__(
        self,
        config: IsoKronProviderConfig | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        """``config`` replaces the file/environment settings; ``clock`` (monotonic seconds)
        drives the cache TTL, so tests can move time."""
        self._explicit_config = config
        self._clock = clock
        self._state = SessionState()
        self._loop = IoLoop()
        self._res: SessionResources | None = None
        self._identity = IdentityBlock()
        self._logged: set[str] = set()
        self._log_lock = threading.Lock()
        self._shut_down = False
        #: Set by ``on_turn_start`` when the cache has expired; the refresh starts after
        #: ``prefetch`` (or at ``sync_turn``).
        self._refresh_due = False

    # ------------------------------------------------------------------ the open session's parts
    @property
    def _cache(self) -> TTLCache | None:
        return None if self._res is None else self._res.cache

    @property
    def _reader(self) -> SubstrateReader | None:
        return None if self._res is None else self._res.reader

    @property
    def _writer(self) -> ChainWriter | None:
        return None if self._res is None else self._res.writer

    # ------------------------------------------------------------------ identity and setup
    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def workspace_id(self) -> str | None:
        """The workspace this provider serves (after ``initialize``)."""
        return None if self._res is None else self._res.workspace_id

    @property
    def session_id(self) -> str:
        """The session the provider's writes belong to."""
        return self._state.session_id

    @property
    def model(self) -> str | None:
        """The model the agent runs on, as Hermes reported it (or its config names it)."""
        return self._state.model

    @property
    def writes_enabled(self) -> bool:
        """True when this provider may write: a token, an open provider, and the primary agent
        context (or any context while the workspace's policy.kora_subagent_writes_enabled is
        true)."""
        res = self._res
        return (
            res is not None
            and res.writer is not None
            and res.config.token() is not None
            and not self._shut_down
            and (self._state.primary or res.subagent_writes_enabled())
        )

    def is_available(self) -> bool:
        """True when the configuration is valid and names a workspace (no network calls)."""
        problem = unavailable_reason(self._explicit_config)
        if problem is not None:
            key, reason = problem
            self._log_once(key, logging.WARNING, "[isokron.provider.unavailable] %s", reason)
        return problem is None

    def get_config_schema(self) -> list[dict[str, Any]]:
        """The settings ``hermes memory setup`` knows; ``env_var`` only on those still missing,
        so ``hermes memory status`` never reports an optional setting as missing."""
        return config_schema(hermes_home_default())

    def get_status_config(self, provider_config: Any = None) -> dict[str, str]:
        """What ``hermes memory status`` shows: each setting, its source, and a warning naming
        the variable of a missing required setting."""
        return status_config(hermes_home_default())

    def post_setup(self, hermes_home: str, config: dict[str, Any]) -> None:
        """``hermes memory setup isokron``: asks at a terminal; otherwise takes the environment
        and prints what is missing and what to run (see :mod:`isokron.provider.setup`)."""
        post_setup(hermes_home, config)

    def save_config(self, values: dict[str, Any], hermes_home: str) -> None:
        save_config_file(values, hermes_home)

    def get_tool_schemas(self) -> list[dict[str, Any]]:
        return [dict(schema) for schema in tools.TOOL_SCHEMAS]

    @_hook()
    def initialize(self, session_id: str, **kwargs: Any) -> None:
        """Load the config, resolve the workspace, and start reads and the gateway session."""
        self._state.begin(session_id, kwargs)
        config = session_config(
            self._explicit_config, self._state.hermes_home, kwargs.get("workspace_id")
        )
        if config is None:
            return
        self._release_previous()
        res = SessionResources.open(
            config, loop=self._loop, clock=self._clock, hermes_home=self._state.hermes_home
        )
        self._res = res
        res.start(self._state.session_id, self._state.agent_context)
        res.prepare_writes(self._loop, self._state.agent_context, primary=self._state.primary)

    # ------------------------------------------------------------------ reads
    @_hook(default="")
    def system_prompt_block(self) -> str:
        """The §1–§6 identity block and the source-of-truth label."""
        res = self._res
        if res is None:
            return ""
        return self._identity.for_system_prompt(
            res.reader, res.cache, res.workspace_id, self._state.model
        )

    def wait_ready(self, timeout: float = 15.0) -> bool:
        """Block until the gateway session is open (at most ``timeout`` s) and queued writes are
        sent. Hermes does not need this (the session opens in the background long before the
        first write); hosts that write right after ``initialize`` (the demo) call it."""
        if self._writer is None or not self.writes_enabled:
            return False
        return self._writer.wait_ready(timeout)

    def session_context(self) -> KoraSessionContext | None:
        """The typed session context (reading what the cache lacks); None if it cannot be had."""
        return None if self._res is None else self._res.session_context()

    @_hook()
    def on_turn_start(self, turn_number: int, message: str, **kwargs: Any) -> None:
        """Keep the reads fresh: nothing to do while the cache is fresh; once it has expired
        the previous values are served while one statement re-reads them in the background,
        started when ``prefetch`` has answered (so the refresh overlaps the model call, not
        this turn's hooks; ``sync_turn`` starts it if no ``prefetch`` came). A cold cache is
        read now. Follow the model Hermes reports (``model=``), whose family sets the prompt
        block's token ceiling."""
        self._state.start_turn(turn_number, kwargs.get("model"))
        if self._res is not None and self._res.reader.needs_refresh(self._res.workspace_id):
            self._refresh_due = True

    @_hook(default="")
    def prefetch(self, query: str, *, session_id: str = "") -> str:
        """Active knowledge-graph nodes that share words with the user's message."""
        res = self._res
        if res is None:
            return ""
        # A system prompt built during an outage said NOT VERIFIED: carry the re-verified block.
        identity = self._identity.reverified(
            res.cache, res.reader, res.workspace_id, self._state.model
        )
        recall = res.recall(query)
        self._start_due_refresh()
        return "\n\n".join(part for part in (identity, recall) if part)

    def queue_prefetch(self, query: str, *, session_id: str = "") -> None:
        """Nothing to queue: ``prefetch`` is a single bounded query."""
        return None

    # ------------------------------------------------------------------ writes
    @_hook()
    def sync_turn(
        self,
        user_content: str,
        assistant_content: str,
        *,
        session_id: str = "",
        messages: list[dict[str, Any]] | None = None,
    ) -> None:
        """A turn whose reply names a capability (``cap_…``) becomes a scratchpad entry."""
        self._start_due_refresh()
        if self._may_write("sync_turn"):
            session = session_id or self._state.session_id
            self._hook_writes().turn(session, user_content, assistant_content)

    @_hook()
    def on_memory_write(
        self, action: str, target: str, content: str, metadata: dict[str, Any] | None = None
    ) -> None:
        """Mirror a built-in memory write as a ``reasoning_trail`` entry."""
        if not self._may_write("on_memory_write"):
            return
        meta = metadata or {}
        session = str(meta.get("session_id") or self._state.session_id)
        old_text = str(meta.get("old_text") or "")
        self._hook_writes().memory_write(session, action, target, content, old_text)

    @_hook()
    def on_delegation(
        self, task: str, result: str, *, child_session_id: str = "", **kwargs: Any
    ) -> None:
        """Record a hand-off: a shared ``handoff_note`` entry and a handoff chain event."""
        if self._may_write("on_delegation"):
            self._hook_writes().delegation(self._state.session_id, task, result, child_session_id)

    @_hook()
    def on_session_end(self, messages: list[dict[str, Any]]) -> None:
        """Emit ``kora.session.ended`` once for the current session."""
        session = self._state.session_id
        if session in self._state.ended or not self._may_write("on_session_end"):
            return
        self._state.ended.add(session)
        self._hook_writes().session_ended(
            session, len(messages or []), self._state.turn, self._state.platform
        )

    @_hook()
    def on_session_switch(
        self,
        new_session_id: str,
        *,
        parent_session_id: str = "",
        reset: bool = False,
        rewound: bool = False,
        **kwargs: Any,
    ) -> None:
        """Follow the new session id; ``reset=True`` (a new conversation) flushes every cache."""
        self._state.switch(new_session_id, reset=reset)
        if reset:
            if self._cache is not None:
                self._cache.clear()
            log.debug("[isokron.provider.cache_flushed] session reset to %s", new_session_id)

    def on_pre_compress(self, messages: list[dict[str, Any]]) -> str:
        """Nothing to add to a compression summary: the substrate is the record."""
        return ""

    # ------------------------------------------------------------------ tools
    @_hook(default=lambda: tools.error_result("the IsoKron provider failed; see the logs", "error"))
    def handle_tool_call(self, tool_name: str, args: dict[str, Any], **kwargs: Any) -> str:
        """Run one of the provider's tools; the result is a JSON string."""
        if self._res is None or self._res.writer is None:
            return tools.error_result(
                "IsoKron memory is not initialized (see the logs)", "unavailable"
            )
        ctx = self._res.tool_context(self._state.session_id, self.writes_enabled, self._invalidate)
        return tools.handle(ctx, tool_name, args)

    # ------------------------------------------------------------------ shutdown
    @_hook()
    def shutdown(self) -> None:
        """Deliver what waits in the outbox (at most :data:`SHUTDOWN_FLUSH_SECONDS`, whatever
        the breaker says), then close the gateway session and the connections. Undelivered writes
        stay on disk."""
        if self._shut_down:
            return
        res = self._res
        if res is not None and res.watchdog is not None:
            res.watchdog.stop()
        if res is not None and res.writer is not None and self.writes_enabled:
            final_flush(res.writer, SHUTDOWN_FLUSH_SECONDS)
        self._shut_down = True
        if res is not None:
            res.reader.close_inline()
        self._loop.stop(cleanup=self._close_all())
        if res is not None and res.outbox is not None:
            res.outbox.close()

    async def _close_all(self) -> None:
        if self._res is not None:
            await close_resources(self._res.gateway, self._res.reader)

    def _release_previous(self) -> None:
        """A second ``initialize`` replaces the session's resources: close the old ones."""
        res, self._res = self._res, None
        if res is not None:
            flush = self._state.primary
            res.release(self._loop, flush=flush, flush_seconds=_REPLACE_FLUSH_SECONDS)

    # ------------------------------------------------------------------ helpers
    def _start_due_refresh(self) -> None:
        """Start the background refresh ``on_turn_start`` found due (at most one runs)."""
        res = self._res
        if self._refresh_due and res is not None:
            self._refresh_due = False
            res.reader.warm_in_background(res.workspace_id)

    def _may_write(self, hook: str) -> bool:
        if self.writes_enabled:
            return True
        if self._writer is not None and not self._shut_down:
            reason = self._state.no_write_reason()
            self._log_once(
                f"nowrite:{hook}",
                logging.DEBUG,
                "[isokron.provider.write_skipped] %s: %s",
                hook,
                reason,
            )
        return False

    def _hook_writes(self) -> HookWrites:
        assert self._res is not None and self._res.writer is not None
        return HookWrites(self._res.writer, self._res.workspace_id, self._invalidate)

    def _invalidate(self, which: Iterable[str]) -> None:
        if self._res is not None:
            self._res.invalidate(which)

    def _log_once(
        self, key: str, level: int, message: str, *args: Any, exc_info: bool = False
    ) -> None:
        with self._log_lock:
            if key in self._logged:
                return
            self._logged.add(key)
        log.log(level, message, *args, exc_info=exc_info)
