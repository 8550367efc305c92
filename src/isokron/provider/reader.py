"""The provider's reads: a lazy reader-role pool, the shared read functions, and the TTL cache.

All SQL lives in :mod:`isokron.substrate.reads`; this module decides *when* to read. Reads run
on the provider's loop; the calling hook waits at most ``hook_timeout_seconds``. A read that
fails because PostgreSQL is unreachable or does not answer in time opens the substrate's
breaker (logged once, see :mod:`isokron.provider.health`): until the watchdog's probe closes
it again, hooks do not wait on the database at all and carry on with the last values read.
Every statement has a timeout (the hook timeout) and every connection attempt one too.

An identity failure (no active charter, NULL content, SHA-256 mismatch) is not an outage: it is
cached like a value, as an :class:`IdentityFailure`, so the prompt block can say loudly that the
identity could not be verified, and it is logged at ERROR once per distinct failure.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import asyncpg

from isokron.errors import IdentityError, SubstrateError, SubstrateUnavailableError
from isokron.governance.policies import (
    POLICIES,
    RECENT_EVENT_READ_LIMIT,
    SCRATCHPAD_READ_LIMIT,
    whole_number,
)
from isokron.provider import cache as names
from isokron.provider.cache import TTLCache
from isokron.provider.health import PROBE_TIMEOUT_SECONDS, Breaker
from isokron.provider.inline import InlineReads, InlineUnavailable
from isokron.provider.loop import IoLoop, LoopClosedError
from isokron.substrate import reads
from isokron.substrate.connection import create_pool
from isokron.substrate.database_errors import translate
from isokron.substrate.models import KoraSessionContext

log = logging.getLogger("isokron.provider.reader")

T = TypeVar("T")

KORA = "kora"
#: What a read raises when the substrate did not answer it (timeouts aside).
_READ_FAILURES = (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError, SubstrateError)
#: The session context is one statement; tools and recall may run beside a refresh.
POOL_MAX_SIZE = 3
#: A workspace policy that caps how long the provider may serve reads from its cache.
CACHE_TTL_POLICY = "policy.kora_cache_ttl_seconds"
_CLOSE_SECONDS = 3.0
PROBE_SQL = "SELECT 1"


@dataclass(frozen=True, slots=True)
class IdentityFailure:
    """The charter could not be verified; ``message`` says why (no charter text is kept)."""

    message: str


class _NoConstitution:
    """Cached marker: the workspace has no constitution revision yet (distinct from 'not read')."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no constitution revision>"


_NO_CONSTITUTION = _NoConstitution()


def read_limit(policy_values: Mapping[str, Any], key: str) -> int:
    """A read's row limit: the workspace's policy, else its seeded value."""
    value = whole_number(policy_values, key)
    return int(POLICIES[key].default) if value is None else value


class SubstrateReader:
    """Cached, bounded reads of one substrate through the reader role."""

    def __init__(
        self,
        dsn: str,
        loop: IoLoop,
        cache: TTLCache,
        *,
        connect_timeout: float,
        timeout: float,
        breaker: Breaker | None = None,
    ) -> None:
        self._dsn = dsn
        self._loop = loop
        self.cache = cache
        self._configured_ttl = cache.ttl_seconds
        self._connect_timeout = connect_timeout
        self.timeout = timeout
        self.breaker = breaker or Breaker("substrate", log)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._identity_logged: set[str] = set()
        self._identity_lock = threading.Lock()
        self._inline = InlineReads(dsn, connect_timeout=connect_timeout, timeout=timeout)

    # ------------------------------------------------------------------ sync API (hook threads)
    def warm(self, workspace_id: str, which: Iterable[str] = names.ALL_READS) -> bool:
        """Read every named value that is not fresh in the cache, all at once.

        Returns True when everything asked for is fresh afterwards. Never raises: an outage is
        recorded and logged once; a warm-up that outlives the wait finishes in the background.
        """
        wanted = [n for n in which if not self.cache.has(workspace_id, n)]
        if not wanted:
            return True
        if not self.breaker.should_try():
            return False
        try:
            return self._loop.run(self._warm_guarded(workspace_id, wanted), self.timeout)
        except TimeoutError:
            # The hook's budget is spent: open the breaker now, so that the next hooks answer
            # from the cache instead of waiting as well (the warm-up may still finish).
            self.breaker.failed(f"the substrate did not answer within {self.timeout:.1f}s")
            return False
        except LoopClosedError:
            return False

    def needs_refresh(self, workspace_id: str) -> bool:
        """True when every read has a value but some have expired: they can be served as they
        are while :meth:`warm_in_background` re-reads them. A read that never succeeded is read
        now (the caller waits, bounded); then, or when all is fresh, False."""
        if all(self.cache.has(workspace_id, n) for n in names.ALL_READS):
            return False
        if any(self.cache.get_stale(workspace_id, n) is None for n in names.ALL_READS):
            self.warm(workspace_id)
            return False
        return True

    def warm_in_background(self, workspace_id: str) -> None:
        """Start reading what is not fresh without waiting for it (e.g. from ``initialize``)."""
        wanted = [n for n in names.ALL_READS if not self.cache.has(workspace_id, n)]
        if not wanted or not self.breaker.should_try():
            return
        running = self._inflight.get(workspace_id)
        if running is not None and not running.done():
            return  # a refresh is under way: it reads every part
        try:
            self._loop.submit(self._warm_guarded(workspace_id, wanted))
        except LoopClosedError:
            return

    def value(self, workspace_id: str, name: str) -> Any:
        """A fresh value (reading it if needed), else the last one read, else None."""
        if not self.cache.has(workspace_id, name):
            self.warm(workspace_id, (name,))
        return self.cache.get_stale(workspace_id, name)

    def run(self, workspace_id: str, read: Callable[[reads.Executor], Awaitable[T]]) -> T:
        """Run one uncached read now (for tools and recall), bounded by the hook timeout: on
        the calling thread when it can (:mod:`isokron.provider.inline`), else on the loop.

        Raises:
            SubstrateError: the substrate is down (or known down) or the read failed.
            TimeoutError: no answer within the timeout.
        """
        if not self.breaker.should_try():
            raise SubstrateError(f"the substrate is unavailable: {self.breaker.last_error}")
        try:
            try:
                result = self._inline.run(read)
            except InlineUnavailable:
                return self._loop.run(self._run_guarded(read), self.timeout)
            except TimeoutError:  # an OSError too: the breaker is told below, as for the loop
                raise
            except _READ_FAILURES as exc:
                self._raise_failure(exc)
        except TimeoutError:
            self.breaker.failed(f"the substrate did not answer within {self.timeout:.1f}s")
            raise
        except LoopClosedError as exc:
            raise SubstrateError("the provider has been shut down") from exc
        self.breaker.succeeded()
        return result

    def close_inline(self) -> None:
        """Close the connection reads on the calling thread use (now, or when the read running
        on it ends), before the loop's own :meth:`close`."""
        self._inline.close()

    def probe(self, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
        """One ``SELECT 1`` bounded by ``timeout`` (the watchdog's check of an open breaker);
        closes the breaker on success."""
        try:
            self._loop.run(self._probe(timeout), timeout + 0.1, cancel_on_timeout=True)
        except (TimeoutError, LoopClosedError, SubstrateError) as exc:
            log.debug("[isokron.provider.substrate.probe_failed] %s", exc)
            return False
        self.breaker.succeeded()
        return True

    def session_context(self, workspace_id: str) -> KoraSessionContext | None:
        """The typed session context from the cache (reading what is missing); None if a read
        other than the charter has never succeeded."""
        self.warm(workspace_id)
        values = {n: self.cache.get_stale(workspace_id, n) for n in names.ALL_READS}
        if any(
            values[n] is None or isinstance(values[n], IdentityFailure)
            for n in names.ALL_READS
            if n != names.CHARTER
        ):
            return None  # never succeeded, or not vouched for by the chain (invariant 4)
        charter = values[names.CHARTER]
        if isinstance(charter, IdentityFailure):
            verified, identity_error = None, charter.message
        elif charter is None:
            verified, identity_error = None, "the role charter has not been read"
        else:
            verified, identity_error = charter, None
        constitution = values[names.CONSTITUTION]
        if isinstance(constitution, _NoConstitution):
            constitution = None
        return KoraSessionContext(
            workspace_id=workspace_id,
            assembled_at=datetime.now(UTC),
            role_charter=verified,
            identity_error=identity_error,
            policies=values[names.POLICIES],
            capability_matrix_row=values[names.CAPABILITIES],
            own_scratchpad=values[names.OWN_SCRATCHPAD],
            cross_agent_scratchpad=values[names.CROSS_SCRATCHPAD],
            recent_chain_events=values[names.EVENTS],
            active_constitution_revision_id=constitution.revision_id if constitution else None,
            active_constitution_rules_hash=constitution.rules_hash_hex if constitution else None,
        )

    def close(self) -> Awaitable[None]:
        """A coroutine that closes the pool (run it on the loop, e.g. through ``IoLoop.stop``)."""
        return self._close()

    # ------------------------------------------------------------------ on the loop
    async def _pool_now(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=POOL_MAX_SIZE,
                    timeout=self._connect_timeout,
                    command_timeout=self.timeout,
                    session_state=False,
                )
            return self._pool

    async def _warm_guarded(self, workspace_id: str, wanted: list[str]) -> bool:
        """Warm ``wanted``; a warm-up already running for the workspace is joined, not repeated."""
        running = self._inflight.get(workspace_id)
        if running is not None and not running.done():
            await asyncio.wait({running})
            wanted = [n for n in wanted if not self.cache.has(workspace_id, n)]
            if not wanted:
                return True
        task = asyncio.ensure_future(self._warm_once(workspace_id, wanted))
        self._inflight[workspace_id] = task
        return await asyncio.shield(task)

    async def _warm_once(self, workspace_id: str, wanted: list[str]) -> bool:
        try:
            await asyncio.wait_for(self._warm(workspace_id, wanted), self.timeout)
        except (
            SubstrateError,
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            self.breaker.failed(_as_substrate_error(exc))
            return False
        self.breaker.succeeded()
        return True

    async def _warm(self, workspace_id: str, wanted: list[str]) -> None:
        """Read every part of the session context in one statement (whatever is ``wanted``:
        the others come with it) and store each; the limits are the workspace's policies."""
        pool = await self._pool_now()
        parts = await reads.read_session_parts(
            pool,
            workspace_id,
            actor_kind=KORA,
            scratchpad_limit=int(POLICIES[SCRATCHPAD_READ_LIMIT].default),
            event_limit=int(POLICIES[RECENT_EVENT_READ_LIMIT].default),
            limits_from_policy=True,
        )
        values: dict[str, Any] = {
            names.CHARTER: parts.charter,
            names.POLICIES: parts.policies,
            names.CAPABILITIES: parts.capabilities,
            names.OWN_SCRATCHPAD: parts.own_scratchpad,
            names.CROSS_SCRATCHPAD: parts.cross_agent_scratchpad,
            names.EVENTS: parts.recent_events,
            names.CONSTITUTION: _NO_CONSTITUTION
            if parts.constitution is None
            else parts.constitution,
        }
        for name, value in values.items():
            if isinstance(value, IdentityError):
                self._log_identity_failure(workspace_id, value)
                value = IdentityFailure(str(value))
            self.cache.put(workspace_id, name, value)
        if not isinstance(parts.policies, IdentityError):
            self._apply_ttl_policy(parts.policies)

    def _apply_ttl_policy(self, policies: Any) -> None:
        """The workspace's ``policy.kora_cache_ttl_seconds`` caps the configured TTL."""
        for entry in policies:
            value = entry.value
            if entry.policy_key == CACHE_TTL_POLICY and isinstance(value, int | float):
                if not isinstance(value, bool) and value >= 0:
                    self.cache.ttl_seconds = min(self._configured_ttl, float(value))
                return
        self.cache.ttl_seconds = self._configured_ttl

    async def _run_guarded(self, read: Callable[[reads.Executor], Awaitable[T]]) -> T:
        try:
            result = await asyncio.wait_for(read(await self._pool_now()), self.timeout)
        except (*_READ_FAILURES, TimeoutError) as exc:
            self._raise_failure(exc)
        self.breaker.succeeded()
        return result

    def _raise_failure(self, exc: BaseException) -> NoReturn:
        """Raise what a failed read raises, telling the breaker when the substrate is
        unreachable."""
        if isinstance(exc, SubstrateError):
            if _is_outage(exc):
                self.breaker.failed(exc)
            raise exc
        error = _as_substrate_error(exc)
        self.breaker.failed(error)
        raise error from exc

    async def _probe(self, timeout: float) -> None:
        try:
            pool = await asyncio.wait_for(self._pool_now(), timeout)
            await pool.fetchval(PROBE_SQL, timeout=timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _as_substrate_error(exc) from None

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), _CLOSE_SECONDS)
        except (TimeoutError, OSError, asyncpg.InterfaceError):
            pool.terminate()

    def _log_identity_failure(self, workspace_id: str, exc: IdentityError) -> None:
        key = f"{workspace_id}:{exc.__class__.__name__}:{exc}"
        with self._identity_lock:
            if key in self._identity_logged:
                return
            self._identity_logged.add(key)
        log.error(
            "[kora.identity.unverified] %s: %s; the prompt block withholds the charter and says so",
            exc.__class__.__name__,
            exc,
        )


def _is_outage(exc: SubstrateError) -> bool:
    return isinstance(exc, SubstrateUnavailableError)


def _as_substrate_error(exc: BaseException) -> SubstrateError:
    """Translate anything a read raised into a SubstrateError (one line, no traceback)."""
    if isinstance(exc, SubstrateError):
        return exc
    if isinstance(exc, TimeoutError):
        return SubstrateError("the substrate did not answer in time")
    translated = translate(exc)
    if isinstance(translated, SubstrateError):
        return translated
    return SubstrateError(f"{exc.__class__.__name__}: {exc}")
