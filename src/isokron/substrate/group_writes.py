"""Group appends: concurrent gateway writes of one workspace share one transaction and commit.

A workspace's appends serialize on its chain head (docs/chain.md §2), so concurrent writes of
one workspace, each in its own transaction, queue for the head row and each pays its own commit
(a WAL flush) while holding it. :class:`GroupWriter` coalesces them instead:

* per workspace, at most one group is in flight; calls that arrive meanwhile queue, and when the
  group has committed the queue (up to ``max_group`` calls) becomes the next group;
* a group is one ``isokron_api.submit_group`` statement (:func:`writes.submit_group`): one round
  trip, one chain-head lock hold, one commit; each call is still its own admission, its own
  rows and its own event, authenticated by the database from its own token hash, and
  all-or-nothing on its own (a subtransaction per call);
* a group never mixes workspaces: groups are keyed by the workspace, and the database refuses an
  item whose token belongs to another (``workspace_mismatch``);
* every caller is answered only after its group's statement has returned, i.e. committed (one
  statement outside a transaction block commits before the server answers it). If the group's
  statement fails (the commit refused, the transaction aborted), every caller in it gets that
  error and nothing of the group exists. If the connection is lost while the statement runs, the
  outcome is unknown to the gateway, exactly as for a single write: every caller gets the
  error, and a retry with the same idempotency key either replays the committed result or
  writes once;
* a caller that is cancelled stops waiting; its write still runs or has run with its group
  (exactly as a cancelled single-statement write may still commit), and the group is never
  cancelled on its behalf.

There is nothing to coalesce when every workspace has a single caller; then each call is a group
of one, the same round trip as :func:`writes.submit`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from isokron.errors import ConfigError, IsoKronError, SubstrateUnavailableError
from isokron.substrate import writes
from isokron.substrate.database_errors import DRIVER_ERRORS, translate

log = logging.getLogger("isokron.substrate")

#: Most calls in one group. Each call is one subtransaction: PostgreSQL caches 64 subtransaction
#: ids per backend before other sessions' snapshots get slower (suboverflow).
DEFAULT_MAX_GROUP = 32
#: What a group's round trip may raise: nothing of the group was committed, every caller gets it.
_GROUP_FAILURES: tuple[type[BaseException], ...] = (
    *DRIVER_ERRORS,
    IsoKronError,
    TypeError,
    ValueError,
)


@dataclass(slots=True)
class _Pending:
    submission: writes.Submission
    future: asyncio.Future[writes.Submitted | BaseException]


@dataclass
class GroupStats:
    """How many groups ran and how large they were (``sizes[n]`` = groups of n calls)."""

    sizes: Counter[int] = field(default_factory=Counter)

    @property
    def groups(self) -> int:
        return sum(self.sizes.values())

    @property
    def calls(self) -> int:
        return sum(n * c for n, c in self.sizes.items())


class GroupWriter:
    """Coalesces concurrent :meth:`submit` calls of one workspace into group writes.

    Borrows ``pool`` (the gateway role's) and never closes it; each group runs one statement on
    one connection. While any workspace has a group in flight, connections that ran a group are
    kept for the next (at most one less than the pool holds); when the last group of a burst
    is done, they go back to the pool.
    """

    def __init__(self, pool: asyncpg.Pool, *, max_group: int = DEFAULT_MAX_GROUP) -> None:
        if max_group < 1:
            raise ConfigError(f"a group holds at least one call, not {max_group}")
        self.pool = pool
        self.max_group = max_group
        self.stats = GroupStats()
        self._queues: dict[str, list[_Pending]] = {}
        self._drains: dict[str, asyncio.Task[None]] = {}
        # Connections that ran a group, kept for the next one while groups are in flight: only
        # group writes (SET LOCAL scoping, nothing of the session) ever run on them, so the
        # pool's reset between two groups (four statements and a round trip) is skipped.
        self._spares: list[Any] = []

    async def submit(
        self,
        *,
        workspace_id: str,
        token_sha256: bytes,
        quotas: Sequence[Mapping[str, Any]],
        op: str,
        args: Mapping[str, Any],
        idempotency_key: str | None,
        over_limit_denial: Mapping[str, Any],
    ) -> writes.Submitted:
        """:func:`writes.submit`, coalesced: same arguments, result and errors.

        Raises:
            RefusalError, NotFoundError, ConflictError: the substrate refused this call.
            SubstrateError: the database failed (this call's group was not committed).
        """
        future: asyncio.Future[writes.Submitted | BaseException]
        future = asyncio.get_running_loop().create_future()
        submission = writes.Submission(
            token_sha256, quotas, op, args, idempotency_key, over_limit_denial
        )
        self._queues.setdefault(workspace_id, []).append(_Pending(submission, future))
        if workspace_id not in self._drains:
            self._drains[workspace_id] = asyncio.create_task(self._drain(workspace_id))
        # shield: a cancelled caller stops waiting; the group it is part of goes on.
        outcome = await asyncio.shield(future)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _drain(self, workspace_id: str) -> None:
        """Run this workspace's queued calls, one group at a time, until none is left."""
        try:
            while queue := self._queues.get(workspace_id):
                group = queue[: self.max_group]
                self._queues[workspace_id] = queue[self.max_group :]
                await self._run(workspace_id, group)
        finally:
            # No await between the last look at the queue and here: nothing can slip in.
            self._drains.pop(workspace_id, None)
            left = self._queues.pop(workspace_id, [])
            _answer_all(left, SubstrateUnavailableError("the gateway stopped before this write"))
            if not self._drains:
                await self._release_spares()

    async def _run(self, workspace_id: str, group: list[_Pending]) -> None:
        self.stats.sizes[len(group)] += 1
        conn: Any = None
        reusable = False
        try:
            conn = self._spares.pop() if self._spares else await self.pool.acquire()
            outcomes = await writes.submit_group(conn, workspace_id, [p.submission for p in group])
            reusable = True
        except _GROUP_FAILURES as exc:
            # Nothing of the group was committed: every caller in it gets the error.
            if not isinstance(exc, IsoKronError):
                log.error(
                    "[isokron.gateway.group_failed] a group write of %d call(s) failed: %r",
                    len(group),
                    exc,
                )
            _answer_all(group, translate(exc))
        else:
            for pending, outcome in zip(group, outcomes, strict=True):
                pending.future.set_result(outcome)
        finally:
            # Cancelled (the gateway stopping) or an unexpected crash: nobody is left waiting.
            _answer_all(group, SubstrateUnavailableError("the group write did not complete"))
            if conn is not None:
                await self._put_back(conn, reusable)

    async def _put_back(self, conn: Any, reusable: bool) -> None:
        """Keep a connection that ran a group for the next group (while any workspace has
        one in flight), up to one less than the pool holds; else return it to the pool, which
        resets it (or drops it, when it failed)."""
        if reusable and len(self._spares) < self.pool.get_max_size() - 1:
            self._spares.append(conn)
            return
        try:
            await self.pool.release(conn)
        except DRIVER_ERRORS as exc:
            log.warning("[isokron.gateway.release_failed] %s", translate(exc))

    async def _release_spares(self) -> None:
        spares, self._spares = self._spares, []
        for conn in spares:
            await self._put_back(conn, reusable=False)


def _answer_all(group: list[_Pending], error: BaseException) -> None:
    for pending in group:
        if not pending.future.done():
            pending.future.set_result(error)
