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
* ``on_turn_start`` — warms all seven reads at once.
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
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from isokron.errors import ConfigError, IsoKronError
from isokron.governance.policies import SUBAGENT_WRITES
from isokron.provider import cache as names
from isokron.provider import tools
from isokron.provider.cache import Clock, TTLCache
from isokron.provider.config import (
    IsoKronProviderConfig,
    load_config,
    save_config_file,
)
from isokron.provider.gateway_client import GatewayClient
from isokron.provider.health import Breaker
from isokron.provider.host import HostMemoryProvider, hermes_home_default
from isokron.provider.loop import IoLoop, LoopClosedError
from isokron.provider.outbox import Outbox, OutboxError, outbox_path
from isokron.provider.prompt_block import (
    recall_query,
    render_prompt_block,
    render_recall,
    stale_note,
)
from isokron.provider.reader import IdentityFailure, SubstrateReader
from isokron.provider.reader import log as reader_log
from isokron.provider.setup import config_schema, post_setup, status_config
from isokron.provider.watchdog import Watchdog
from isokron.provider.writes import (
    APPEND_EVENT_TOOL,
    WRITE_SCRATCHPAD_TOOL,
    ChainWriter,
    cap_content,
    idempotency_key,
    kora_actions,
    looks_like_kora_action,
    summarize_for_scratchpad,
)
from isokron.provider.writes import log as writes_log
from isokron.substrate import reads
from isokron.substrate.models import KoraSessionContext, PolicyEntry, RoleCharter

log = logging.getLogger("isokron.provider")

PROVIDER_NAME = "isokron"
PRIMARY = "primary"
HANDOFF_EVENT = "kora.handoff.to_claude_pm"
SESSION_ENDED_EVENT = "kora.session.ended"
RECALL_LIMIT = 5
#: How long ``shutdown`` spends delivering the outbox, whatever the breaker says (Hermes joins
#: no thread around ``shutdown``; what is not delivered by then stays on disk).
SHUTDOWN_FLUSH_SECONDS = 5.0
#: The same when a second ``initialize`` replaces a session's resources.
_REPLACE_FLUSH_SECONDS = 1.0
REVERIFIED_HEADING = (
    "IsoKron identity re-verified after an outage — this replaces the NOT VERIFIED notice "
    "in the system prompt:"
)

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
        self._config: IsoKronProviderConfig | None = None
        self._workspace_id: str | None = None
        self._session_id = ""
        self._agent_context = PRIMARY
        self._platform = ""
        self._hermes_home: str | None = None
        self._turn = 0
        self._loop = IoLoop()
        self._cache: TTLCache | None = None
        self._reader: SubstrateReader | None = None
        self._gateway: GatewayClient | None = None
        self._writer: ChainWriter | None = None
        self._outbox: Outbox | None = None
        self._watchdog: Watchdog | None = None
        self._shown_unverified = False
        self._ended_sessions: set[str] = set()
        self._logged: set[str] = set()
        self._log_lock = threading.Lock()
        self._shut_down = False
        self._prompt_memo: tuple[tuple[Any, ...], str] | None = None
        self._model: str | None = None

    # ------------------------------------------------------------------ identity and setup
    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def workspace_id(self) -> str | None:
        """The workspace this provider serves (after ``initialize``)."""
        return self._workspace_id

    @property
    def session_id(self) -> str:
        """The session the provider's writes belong to."""
        return self._session_id

    @property
    def model(self) -> str | None:
        """The model the agent runs on, as Hermes reported it (or its config names it)."""
        return self._model

    @property
    def writes_enabled(self) -> bool:
        """True when this provider may write: a token, an open provider, and the primary agent
        context (or any context while the workspace's policy.kora_subagent_writes_enabled is
        true)."""
        return (
            self._writer is not None
            and self._config is not None
            and self._config.token() is not None
            and not self._shut_down
            and (self._agent_context == PRIMARY or self._subagent_writes_enabled())
        )

    def _subagent_writes_enabled(self) -> bool:
        """The workspace's policy.kora_subagent_writes_enabled (exactly true; else off)."""
        if self._reader is None or self._workspace_id is None:
            return False
        policies = self._reader.value(self._workspace_id, names.POLICIES) or ()
        return any(
            p.policy_key == SUBAGENT_WRITES and p.value is True
            for p in policies
            if isinstance(p, PolicyEntry)
        )

    def is_available(self) -> bool:
        """True when the configuration is valid and names a workspace (no network calls)."""
        try:
            config = self._explicit_config or load_config(hermes_home_default())
        except ConfigError as exc:
            self._log_once(
                "available:config", logging.WARNING, "[isokron.provider.unavailable] %s", exc
            )
            return False
        if config.workspace_id is None:
            self._log_once(
                "available:workspace",
                logging.WARNING,
                "[isokron.provider.unavailable] no IsoKron workspace: set ISOKRON_WORKSPACE_ID "
                "(in $HERMES_HOME/.env) or run `hermes memory setup isokron`; IsoKron is off",
            )
            return False
        return True

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
        self._hermes_home = kwargs.get("hermes_home") or hermes_home_default()
        self._session_id = session_id or ""
        self._agent_context = str(kwargs.get("agent_context") or PRIMARY)
        self._platform = str(kwargs.get("platform") or "")
        self._model = _model_name(kwargs.get("model")) or hermes_model(self._hermes_home)
        try:
            config = self._explicit_config or load_config(self._hermes_home)
        except ConfigError as exc:
            log.error(
                "[isokron.provider.config_invalid] %s; IsoKron memory is off for this session", exc
            )
            return
        workspace = kwargs.get("workspace_id") or config.workspace_id
        if not workspace:
            log.warning(
                "[isokron.provider.no_workspace] no IsoKron workspace: set ISOKRON_WORKSPACE_ID "
                "(or run `hermes memory setup isokron`); IsoKron memory is off for this session"
            )
            return
        if workspace != config.workspace_id:
            config = config.with_workspace(str(workspace))
        self._release_previous()
        self._config, self._workspace_id = config, config.workspace_id
        self._cache = TTLCache(config.cache_ttl_seconds, clock=self._clock)
        self._reader = SubstrateReader(
            config.reader_dsn,
            self._loop,
            self._cache,
            connect_timeout=config.connect_timeout_seconds,
            timeout=config.hook_timeout_seconds,
            breaker=Breaker("substrate", reader_log, clock=self._clock),
        )
        log_dir = Path(self._hermes_home) / "logs" if self._hermes_home else None
        self._gateway = GatewayClient(config, log_dir=log_dir)
        self._writer = self._open_writer(self._gateway, config)
        log.info(
            "[isokron.provider.initialized] workspace=%s session=%s context=%s gateway=%s",
            self._workspace_id,
            self._session_id,
            self._agent_context,
            self._gateway.describe_endpoint(),
        )
        assert self._workspace_id is not None
        self._reader.warm_in_background(self._workspace_id)
        self._watchdog = Watchdog(
            self._reader,
            # Any context with a token: the outbox holds only writes a session accepted.
            self._writer if config.token() is not None else None,
            on_substrate_recovered=self._substrate_recovered,
            gateway_needs_substrate=config.transport == "stdio",
        )
        if self._writer is not None:
            self._writer.wake = self._watchdog.wake
        self._watchdog.start()
        if self._agent_context != PRIMARY and not self._subagent_writes_enabled():
            log.info(
                "[isokron.provider.read_only] agent context %r: no writes "
                "(policy.kora_subagent_writes_enabled is not true)",
                self._agent_context,
            )
        elif config.token() is None:
            log.warning(
                "[isokron.provider.no_token] KORA_SERVICE_TOKEN is not set: reads only, no writes"
            )
        else:
            self._preconnect()

    def _open_writer(
        self, gateway: GatewayClient, config: IsoKronProviderConfig
    ) -> ChainWriter | None:
        """The writer over this Hermes home's durable outbox (None, and no writes, if the
        outbox cannot be opened: a write that could be lost is not accepted)."""
        assert self._workspace_id is not None
        home = self._hermes_home or str(Path.home() / ".hermes")
        try:
            self._outbox = Outbox(outbox_path(home))
        except OutboxError as exc:
            log.error("[kora.outbox.failed] %s; IsoKron writes are off for this session", exc)
            return None
        return ChainWriter(
            gateway,
            self._loop,
            self._outbox,
            self._workspace_id,
            timeout=config.hook_timeout_seconds,
            breaker=Breaker("gateway", writes_log, clock=self._clock),
            on_delivered=lambda: self._invalidate((names.OWN_SCRATCHPAD, names.EVENTS)),
        )

    def _substrate_recovered(self) -> None:
        """The watchdog saw PostgreSQL answer again: re-read everything (identity included)."""
        if self._reader is not None and self._workspace_id is not None:
            self._reader.warm_in_background(self._workspace_id)

    # ------------------------------------------------------------------ reads
    @_hook(default="")
    def system_prompt_block(self) -> str:
        """The §1–§6 identity block and the source-of-truth label."""
        if self._reader is None or self._workspace_id is None:
            return ""
        text, verified = self._render_block()
        self._shown_unverified = not verified
        return text

    def _render_block(self) -> tuple[str, bool]:
        """The block, and whether its identity is verified."""
        assert self._reader is not None and self._workspace_id is not None
        ws, cache = self._workspace_id, self._cache
        assert cache is not None
        shown = (names.CHARTER, names.POLICIES, names.CAPABILITIES, names.EVENTS)
        self._reader.warm(ws, shown)
        values = {n: cache.get_stale(ws, n) for n in shown}
        charter = values[names.CHARTER]
        stale = any(values[n] is not None and not cache.has(ws, n) for n in shown)
        note = (
            stale_note(self._reader.breaker.last_error)
            if stale and self._reader.breaker.down
            else None
        )
        verified = isinstance(charter, RoleCharter)
        # The block is re-rendered only when one of its inputs was replaced in the cache: the
        # memo holds the input objects themselves and compares them by identity.
        inputs = (ws, note, self._model, *(values[n] for n in shown))
        memo = self._prompt_memo
        if (
            memo is not None
            and len(memo[0]) == len(inputs)
            and all(a is b for a, b in zip(memo[0], inputs, strict=True))
        ):
            return memo[1], verified
        text = render_prompt_block(
            workspace_id=ws,
            charter=None if isinstance(charter, IdentityFailure) else charter,
            identity_error=charter.message if isinstance(charter, IdentityFailure) else None,
            policies=_verified_or_none(values[names.POLICIES]),
            capabilities=_verified_or_none(values[names.CAPABILITIES]),
            recent_events=values[names.EVENTS],
            note=note,
            model=self._model,
        )
        self._prompt_memo = (inputs, text)
        return text, verified

    def wait_ready(self, timeout: float = 15.0) -> bool:
        """Block until the gateway session is open (at most ``timeout`` s) and queued writes are
        sent. Hermes does not need this (the session opens in the background long before the
        first write); hosts that write right after ``initialize`` (the demo) call it."""
        if self._writer is None or not self.writes_enabled:
            return False
        return self._writer.wait_ready(timeout)

    def session_context(self) -> KoraSessionContext | None:
        """The typed session context (reading what the cache lacks); None if it cannot be had."""
        if self._reader is None or self._workspace_id is None:
            return None
        try:
            return self._reader.session_context(self._workspace_id)
        except IsoKronError as exc:
            log.warning("[isokron.provider.session_context_failed] %s", exc)
            return None

    @_hook()
    def on_turn_start(self, turn_number: int, message: str, **kwargs: Any) -> None:
        """Warm every read at once (only those the cache does not hold fresh); follow the model
        Hermes reports (``model=``), whose family sets the prompt block's token ceiling."""
        self._turn = int(turn_number or 0)
        self._model = _model_name(kwargs.get("model")) or self._model
        if self._reader is not None and self._workspace_id is not None:
            self._reader.warm(self._workspace_id)

    @_hook(default="")
    def prefetch(self, query: str, *, session_id: str = "") -> str:
        """Active knowledge-graph nodes that share words with the user's message."""
        if self._reader is None or self._workspace_id is None:
            return ""
        identity = self._reverified_identity()
        search = recall_query(query)
        if not search:
            return identity
        ws = self._workspace_id
        try:
            nodes = self._reader.run(
                ws, lambda pool: reads.search_iso_nodes(pool, ws, search, limit=RECALL_LIMIT)
            )
        except (IsoKronError, TimeoutError) as exc:
            log.debug("[isokron.provider.prefetch_skipped] %s", exc)
            return identity
        recall = render_recall(nodes)
        return "\n\n".join(part for part in (identity, recall) if part)

    def _reverified_identity(self) -> str:
        """The identity block, when this session's system prompt said NOT VERIFIED (built during
        an outage) and the charter has been verified since; Hermes keeps a session's system
        prompt, so the turn context is where the model learns who it is after all."""
        if not self._shown_unverified or self._cache is None or self._workspace_id is None:
            return ""
        if not isinstance(self._cache.get_stale(self._workspace_id, names.CHARTER), RoleCharter):
            return ""
        block, verified = self._render_block()
        return f"{REVERIFIED_HEADING}\n{block}" if verified else ""

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
        if not self._may_write("sync_turn"):
            return
        if not looks_like_kora_action(assistant_content):
            return
        session = session_id or self._session_id
        caps = kora_actions(assistant_content)
        self._write_scratchpad(
            kind="reasoning_trail",
            summary=summarize_for_scratchpad(assistant_content),
            content=f"user:\n{user_content}\n\nassistant:\n{assistant_content}",
            session_id=session,
            key=idempotency_key("sync_turn", session, user_content, assistant_content),
            what=f"sync_turn scratchpad ({', '.join(caps)})",
        )

    @_hook()
    def on_memory_write(
        self, action: str, target: str, content: str, metadata: dict[str, Any] | None = None
    ) -> None:
        """Mirror a built-in memory write as a ``reasoning_trail`` entry."""
        if not self._may_write("on_memory_write"):
            return
        meta = metadata or {}
        session = str(meta.get("session_id") or self._session_id)
        self._write_scratchpad(
            kind="reasoning_trail",
            summary=summarize_for_scratchpad(f"[memory.{action} → {target}] {content}"),
            content=content or "",
            session_id=session,
            key=idempotency_key(
                "memory_write", session, action, target, content, str(meta.get("old_text") or "")
            ),
            what=f"memory.{action} → {target}",
        )

    @_hook()
    def on_delegation(
        self, task: str, result: str, *, child_session_id: str = "", **kwargs: Any
    ) -> None:
        """Record a hand-off: a shared ``handoff_note`` entry and a handoff chain event."""
        if not self._may_write("on_delegation"):
            return
        session = self._session_id
        entry = self._write_scratchpad(
            kind="handoff_note",
            summary=summarize_for_scratchpad(
                f"[delegation → {child_session_id or 'subagent'}] {task}"
            ),
            content=f"task:\n{task}\n\nresult:\n{result}",
            session_id=session,
            key=idempotency_key("delegation", session, child_session_id, task, result),
            what="delegation handoff_note",
            visibility="cross_agent_dereferenceable",
        )
        self._append_event(
            HANDOFF_EVENT,
            {
                "session_id": session,
                "child_session_id": child_session_id or None,
                "task_summary": summarize_for_scratchpad(task),
                "result_summary": summarize_for_scratchpad(result or ""),
                "scratchpad_entry_id": (entry or {}).get("entry_id"),
            },
            key=idempotency_key("handoff", session, child_session_id, task, result),
        )

    @_hook()
    def on_session_end(self, messages: list[dict[str, Any]]) -> None:
        """Emit ``kora.session.ended`` once for the current session."""
        session = self._session_id
        if session in self._ended_sessions or not self._may_write("on_session_end"):
            return
        self._ended_sessions.add(session)
        self._append_event(
            SESSION_ENDED_EVENT,
            {
                "session_id": session,
                "messages": len(messages or []),
                "turns": self._turn,
                "platform": self._platform or None,
            },
            key=idempotency_key("session_end", session),
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
        if new_session_id:
            self._session_id = new_session_id
        if reset:
            self._turn = 0
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
        if self._reader is None or self._writer is None or self._workspace_id is None:
            return tools.error_result(
                "IsoKron memory is not initialized (see the logs)", "unavailable"
            )
        ctx = tools.ToolContext(
            workspace_id=self._workspace_id,
            session_id=self._session_id,
            reader=self._reader,
            writer=self._writer,
            writes_allowed=self.writes_enabled,
            invalidate=self._invalidate,
        )
        return tools.handle(ctx, tool_name, args)

    # ------------------------------------------------------------------ shutdown
    @_hook()
    def shutdown(self) -> None:
        """Deliver what waits in the outbox (at most :data:`SHUTDOWN_FLUSH_SECONDS`, whatever
        the breaker says), then close the gateway session and the pool. Undelivered writes
        stay on disk."""
        if self._shut_down:
            return
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._writer is not None and self.writes_enabled:
            _final_flush(self._writer, SHUTDOWN_FLUSH_SECONDS)
        self._shut_down = True
        self._loop.stop(cleanup=self._close_all())
        if self._outbox is not None:
            self._outbox.close()

    async def _close_all(self) -> None:
        await _close_resources(self._gateway, self._reader)

    def _release_previous(self) -> None:
        """A second ``initialize`` replaces the session's resources: close the old ones."""
        gateway, reader, writer = self._gateway, self._reader, self._writer
        watchdog, outbox = self._watchdog, self._outbox
        self._gateway = self._reader = self._writer = self._watchdog = self._outbox = None
        if watchdog is not None:
            watchdog.stop()
        if writer is not None and self._agent_context == PRIMARY:
            _final_flush(writer, _REPLACE_FLUSH_SECONDS)
        if outbox is not None:
            outbox.close()
        if gateway is not None or reader is not None:
            try:
                self._loop.submit(_close_resources(gateway, reader))
            except LoopClosedError:
                return

    # ------------------------------------------------------------------ helpers
    def _may_write(self, hook: str) -> bool:
        if self.writes_enabled:
            return True
        if self._writer is not None and not self._shut_down:
            reason = (
                f"agent context {self._agent_context!r}"
                if self._agent_context != PRIMARY
                else "no service token"
            )
            self._log_once(
                f"nowrite:{hook}",
                logging.DEBUG,
                "[isokron.provider.write_skipped] %s: %s",
                hook,
                reason,
            )
        return False

    def _write_scratchpad(
        self,
        *,
        kind: str,
        summary: str,
        content: str,
        session_id: str,
        key: str,
        what: str,
        visibility: str = "own_only",
    ) -> dict[str, Any] | None:
        assert self._writer is not None and self._workspace_id is not None
        self._invalidate((names.OWN_SCRATCHPAD, names.EVENTS))
        return self._writer.write(
            WRITE_SCRATCHPAD_TOOL,
            {
                "workspace_id": self._workspace_id,
                "kind": kind,
                "summary": summary,
                "content": cap_content(content),
                "visibility_scope": visibility,
                "session_id": session_id or None,
                "idempotency_key": key,
            },
            what=what,
            on_success=lambda _result: self._invalidate((names.OWN_SCRATCHPAD, names.EVENTS)),
        )

    def _append_event(
        self, event_type: str, payload: dict[str, Any], *, key: str
    ) -> dict[str, Any] | None:
        assert self._writer is not None and self._workspace_id is not None
        return self._writer.write(
            APPEND_EVENT_TOOL,
            {
                "workspace_id": self._workspace_id,
                "event_type": event_type,
                "payload": payload,
                "idempotency_key": key,
            },
            what=event_type,
            on_success=lambda _result: self._invalidate((names.EVENTS,)),
        )

    def _invalidate(self, which: Iterable[str]) -> None:
        if self._cache is not None and self._workspace_id is not None:
            self._cache.invalidate(self._workspace_id, which)

    def _preconnect(self) -> None:
        """Open the gateway session in the background so the first write need not wait."""
        gateway, writer = self._gateway, self._writer
        if gateway is None or writer is None:
            return
        try:
            future = self._loop.submit(gateway.connect())
        except LoopClosedError:
            return

        def done(fut: Any) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is None:
                writer.breaker.succeeded()
            else:
                writer.breaker.failed(exc)

        future.add_done_callback(done)

    def _log_once(
        self, key: str, level: int, message: str, *args: Any, exc_info: bool = False
    ) -> None:
        with self._log_lock:
            if key in self._logged:
                return
            self._logged.add(key)
        log.log(level, message, *args, exc_info=exc_info)


def _final_flush(writer: ChainWriter, budget: float) -> None:
    """Deliver what waits within ``budget`` seconds, breaker or not; say what stays on disk."""
    if not writer.pending:
        return
    writer.flush(budget=budget, force=True)
    left = writer.pending
    if left:
        log.warning(
            "[kora.outbox.kept] %d write(s) could not be delivered within %.0fs; they stay in "
            "%s and are delivered by the next session on this Hermes home or by "
            "`isokron outbox flush`",
            left,
            budget,
            writer.outbox.path,
        )


def _model_name(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def hermes_model(hermes_home: str | None) -> str | None:
    """The model ``$HERMES_HOME/config.yaml`` names (``model: name`` or ``model: {default:}``)."""
    if not hermes_home:
        return None
    path = Path(hermes_home) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict):
        model = model.get("default") or model.get("model")
    return _model_name(model)


async def _close_resources(gateway: GatewayClient | None, reader: SubstrateReader | None) -> None:
    if gateway is not None:
        await gateway.close()
    if reader is not None:
        await reader.close()


def _verified_or_none(value: Any) -> Any:
    """Policies or capabilities the chain does not vouch for are not presented (invariant 4):
    the block shows them as unavailable; the failure was logged at ERROR when read."""
    return None if isinstance(value, IdentityFailure) else value
