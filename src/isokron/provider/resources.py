"""What one ``initialize`` opens for one workspace, and how it is started and released.

:class:`SessionResources` holds the provider's configuration, the read cache, the reader (pool
to PostgreSQL), the gateway session, the durable outbox with its writer, and the watchdog. The
provider (:class:`isokron.provider.provider.IsoKronMemoryProvider`) keeps one at a time; a
second ``initialize`` releases the old one (its outbox delivered within a short budget) before
the new one is opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isokron.errors import ConfigError, IsoKronError
from isokron.governance.policies import SUBAGENT_WRITES
from isokron.provider import cache as names
from isokron.provider import tools
from isokron.provider.cache import Clock, TTLCache
from isokron.provider.config import IsoKronProviderConfig, load_config
from isokron.provider.gateway_client import GatewayClient
from isokron.provider.health import Breaker
from isokron.provider.host import hermes_home_default
from isokron.provider.loop import IoLoop, LoopClosedError
from isokron.provider.outbox import Outbox, OutboxError, outbox_path
from isokron.provider.prompt_block import recall_query, render_recall
from isokron.provider.reader import SubstrateReader
from isokron.provider.reader import log as reader_log
from isokron.provider.watchdog import Watchdog
from isokron.provider.writes import ChainWriter
from isokron.provider.writes import log as writes_log
from isokron.substrate import reads
from isokron.substrate.models import KoraSessionContext, PolicyEntry

# The provider's logger: these lines were always the provider's.
log = logging.getLogger("isokron.provider")

RECALL_LIMIT = 5


@dataclass
class SessionResources:
    """One workspace's config, cache, reader, gateway session, outbox, writer and watchdog."""

    config: IsoKronProviderConfig
    workspace_id: str
    cache: TTLCache
    reader: SubstrateReader
    gateway: GatewayClient
    outbox: Outbox | None = None
    writer: ChainWriter | None = None
    watchdog: Watchdog | None = None

    @classmethod
    def open(
        cls,
        config: IsoKronProviderConfig,
        *,
        loop: IoLoop,
        clock: Clock,
        hermes_home: str | None,
    ) -> SessionResources:
        """Build everything (nothing is started: see :meth:`start`)."""
        assert config.workspace_id is not None
        cache = TTLCache(config.cache_ttl_seconds, clock=clock)
        reader = SubstrateReader(
            config.reader_dsn,
            loop,
            cache,
            connect_timeout=config.connect_timeout_seconds,
            timeout=config.hook_timeout_seconds,
            breaker=Breaker("substrate", reader_log, clock=clock),
        )
        log_dir = Path(hermes_home) / "logs" if hermes_home else None
        gateway = GatewayClient(config, log_dir=log_dir)
        res = cls(config, config.workspace_id, cache, reader, gateway)
        res.outbox, res.writer = res._open_writer(loop, clock, hermes_home)
        return res

    def _open_writer(
        self, loop: IoLoop, clock: Clock, hermes_home: str | None
    ) -> tuple[Outbox | None, ChainWriter | None]:
        """The writer over this Hermes home's durable outbox (None, and no writes, if the
        outbox cannot be opened: a write that could be lost is not accepted)."""
        home = hermes_home or str(Path.home() / ".hermes")
        try:
            outbox = Outbox(outbox_path(home))
        except OutboxError as exc:
            log.error("[kora.outbox.failed] %s; IsoKron writes are off for this session", exc)
            return None, None
        writer = ChainWriter(
            self.gateway,
            loop,
            outbox,
            self.workspace_id,
            timeout=self.config.hook_timeout_seconds,
            breaker=Breaker("gateway", writes_log, clock=clock),
            on_delivered=lambda: self.invalidate((names.OWN_SCRATCHPAD, names.EVENTS)),
        )
        return outbox, writer

    def start(self, session_id: str, agent_context: str) -> None:
        """Say what was opened, warm the reads in the background and start the watchdog."""
        log.info(
            "[isokron.provider.initialized] workspace=%s session=%s context=%s gateway=%s",
            self.workspace_id,
            session_id,
            agent_context,
            self.gateway.describe_endpoint(),
        )
        self.reader.warm_in_background(self.workspace_id)
        self.watchdog = Watchdog(
            self.reader,
            # Any context with a token: the outbox holds only writes a session accepted.
            self.writer if self.config.token() is not None else None,
            on_substrate_recovered=self.substrate_recovered,
            gateway_needs_substrate=self.config.transport == "stdio",
        )
        if self.writer is not None:
            self.writer.wake = self.watchdog.wake
        self.watchdog.start()

    def subagent_writes_enabled(self) -> bool:
        """The workspace's policy.kora_subagent_writes_enabled (exactly true; else off)."""
        policies = self.reader.value(self.workspace_id, names.POLICIES) or ()
        return any(
            p.policy_key == SUBAGENT_WRITES and p.value is True
            for p in policies
            if isinstance(p, PolicyEntry)
        )

    def prepare_writes(self, loop: IoLoop, agent_context: str, *, primary: bool) -> None:
        """Say why this session does not write, or open the gateway session for its writes."""
        if not primary and not self.subagent_writes_enabled():
            log.info(
                "[isokron.provider.read_only] agent context %r: no writes "
                "(policy.kora_subagent_writes_enabled is not true)",
                agent_context,
            )
        elif self.config.token() is None:
            log.warning(
                "[isokron.provider.no_token] KORA_SERVICE_TOKEN is not set: reads only, no writes"
            )
        else:
            self.preconnect(loop)

    def recall(self, query: str) -> str:
        """Active knowledge-graph nodes that share words with ``query`` (rendered; "" if none,
        or if the read fails or times out)."""
        search = recall_query(query)
        if not search:
            return ""
        ws = self.workspace_id
        try:
            nodes = self.reader.run(
                ws, lambda pool: reads.recall_nodes(pool, ws, search, limit=RECALL_LIMIT)
            )
        except (IsoKronError, TimeoutError) as exc:
            log.debug("[isokron.provider.prefetch_skipped] %s", exc)
            return ""
        return render_recall(nodes)

    def session_context(self) -> KoraSessionContext | None:
        """The typed session context (reading what the cache lacks); None if it cannot be had."""
        try:
            return self.reader.session_context(self.workspace_id)
        except IsoKronError as exc:
            log.warning("[isokron.provider.session_context_failed] %s", exc)
            return None

    def tool_context(
        self, session_id: str, writes_allowed: bool, invalidate: Callable[[Iterable[str]], None]
    ) -> tools.ToolContext:
        """What the provider's tools run with (this session must have a writer)."""
        assert self.writer is not None
        return tools.ToolContext(
            workspace_id=self.workspace_id,
            session_id=session_id,
            reader=self.reader,
            writer=self.writer,
            writes_allowed=writes_allowed,
            invalidate=invalidate,
        )

    def substrate_recovered(self) -> None:
        """The watchdog saw PostgreSQL answer again: re-read everything (identity included)."""
        self.reader.warm_in_background(self.workspace_id)

    def invalidate(self, which: Iterable[str]) -> None:
        self.cache.invalidate(self.workspace_id, which)

    def preconnect(self, loop: IoLoop) -> None:
        """Open the gateway session in the background so the first write need not wait."""
        writer = self.writer
        if writer is None:
            return
        try:
            future = loop.submit(self.gateway.connect())
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

    def release(self, loop: IoLoop, *, flush: bool, flush_seconds: float) -> None:
        """Stop the watchdog, deliver what waits (``flush``), close the outbox, the gateway
        session, the reader's connections (a second ``initialize`` replaces these)."""
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.writer is not None and flush:
            final_flush(self.writer, flush_seconds)
        if self.outbox is not None:
            self.outbox.close()
        self.reader.close_inline()
        try:
            loop.submit(close_resources(self.gateway, self.reader))
        except LoopClosedError:
            return


def session_config(
    explicit: IsoKronProviderConfig | None, hermes_home: str | None, workspace: Any
) -> IsoKronProviderConfig | None:
    """The session's config (``explicit`` or loaded from ``hermes_home``), for ``workspace``
    when ``initialize`` names one; None, logged, when it is invalid or names no workspace."""
    try:
        config = explicit or load_config(hermes_home)
    except ConfigError as exc:
        log.error(
            "[isokron.provider.config_invalid] %s; IsoKron memory is off for this session", exc
        )
        return None
    workspace = workspace or config.workspace_id
    if not workspace:
        log.warning(
            "[isokron.provider.no_workspace] no IsoKron workspace: set ISOKRON_WORKSPACE_ID "
            "(or run `hermes memory setup isokron`); IsoKron memory is off for this session"
        )
        return None
    if workspace != config.workspace_id:
        config = config.with_workspace(str(workspace))
    return config


def unavailable_reason(explicit: IsoKronProviderConfig | None) -> tuple[str, str] | None:
    """Why the provider is not available (a log-once key and the reason), or None: the
    configuration (``explicit`` or the Hermes home's) is valid and names a workspace."""
    try:
        config = explicit or load_config(hermes_home_default())
    except ConfigError as exc:
        return "available:config", str(exc)
    if config.workspace_id is None:
        return (
            "available:workspace",
            "no IsoKron workspace: set ISOKRON_WORKSPACE_ID (in $HERMES_HOME/.env) or run "
            "`hermes memory setup isokron`; IsoKron is off",
        )
    return None


def final_flush(writer: ChainWriter, budget: float) -> None:
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


async def close_resources(gateway: GatewayClient | None, reader: SubstrateReader | None) -> None:
    if gateway is not None:
        await gateway.close()
    if reader is not None:
        await reader.close()
