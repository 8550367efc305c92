"""The gateway's calls to the substrate through its own role (EXECUTE on isokron_api only).

A write-tool call costs one round trip: one statement asks ``isokron_api.admit_write`` whether
the call fits the actor's quotas (per-minute writes, burst, per-type limits, caps; which ones
and their limits come from ``isokron.governance.operations``; the counts are stored in the
database so they hold across restarts and across gateway processes) and, in the same
transaction, either performs the write (``isokron_api.write``: the row and its chain event) or
appends the denial event.

Design note on SUBMIT_SQL. The admission runs in a materialized CTE (it calls a volatile
function, so PostgreSQL evaluates it exactly once), and the CASE evaluates at most one of its
two ``isokron_api.write`` calls. If the write raises (a substrate refusal such as an unknown
node), the whole statement rolls back, budget unit included; the caller then submits the
denial, which consumes the unit again, so every call costs exactly one unit. The budget row
stays locked until the statement commits, which serializes one actor's writes; the chain head
already serializes a tenant's appends, so this adds no contention that was not there.

Denial events are bounded by the same budget: once an actor is over its limit, only the first
refused call of the minute is chained (``calls = limit + 1``); later ones are logged only, so
a runaway client cannot flood the chain with denials (``chain_denial`` in the admission).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from isokron.substrate.database_errors import DRIVER_ERRORS, translate

SUBMIT_SQL = """
WITH budget AS (
    SELECT isokron_api.admit_write($1, $2::uuid, $3::jsonb) AS rate
)
SELECT rate,
       CASE WHEN (rate ->> 'allowed')::boolean
                THEN isokron_api.write($4, $1, $2::uuid, $5::jsonb, $6)
            WHEN (rate ->> 'chain_denial')::boolean
                THEN isokron_api.write('record_denial', $1, $2::uuid, $7::jsonb, NULL)
       END AS result
FROM budget
"""
MAINTAIN_SQL = "SELECT isokron_api.maintain($1)"
HEALTH_SQL = "SELECT 1"

RECORD_DENIAL = "record_denial"


@dataclass(frozen=True, slots=True)
class Submitted:
    """What one submission did: the admission's answer and the write's (or denial's) result.

    When the call was not admitted, ``bucket`` names the quota it exceeded, ``code`` its
    refusal code and ``limit`` its limit; ``retry_after_seconds`` is None for a cap on state
    (open escalations), which no waiting lifts.
    """

    allowed: bool
    retry_after_seconds: int | None
    result: Mapping[str, Any] | None
    bucket: str | None = None
    code: str | None = None
    limit: int | None = None

    @property
    def event_id(self) -> str | None:
        return None if self.result is None else str(self.result.get("event_id"))


async def submit(
    pool: asyncpg.Pool,
    *,
    workspace_id: str,
    actor_id: str,
    quotas: Sequence[Mapping[str, Any]],
    op: str,
    args: Mapping[str, Any],
    idempotency_key: str | None,
    over_limit_denial: Mapping[str, Any],
) -> Submitted:
    """Admit the call against ``quotas`` and, if admitted, perform ``op`` with ``args``.

    Not admitted, ``over_limit_denial`` (``record_denial`` arguments) is chained instead (for
    the per-minute budget, for the first call over only).

    Raises:
        RefusalError, NotFoundError, ConflictError: the substrate refused the operation.
        SubstrateError: the database failed.
    """
    try:
        row = await pool.fetchrow(
            SUBMIT_SQL,
            workspace_id,
            actor_id,
            list(quotas),
            op,
            dict(args),
            idempotency_key,
            dict(over_limit_denial),
        )
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    assert row is not None
    rate = row["rate"]
    retry = rate.get("retry_after_seconds")
    return Submitted(
        allowed=bool(rate["allowed"]),
        retry_after_seconds=None if retry is None else int(retry),
        result=row["result"],
        bucket=rate.get("bucket"),
        code=rate.get("code"),
        limit=rate.get("limit"),
    )


async def maintain(pool: asyncpg.Pool, workspace_id: str | None = None) -> dict[str, Any]:
    """Close what is overdue (expired escalations and proposals, scratchpad past retention,
    stale idempotency keys) in one workspace or, with None, in all; returns the counts."""
    try:
        result = await pool.fetchval(MAINTAIN_SQL, workspace_id)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    return dict(result or {})


async def ping(pool: asyncpg.Pool) -> None:
    """Round-trip to the database through the gateway role (the health check)."""
    try:
        await pool.fetchval(HEALTH_SQL)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
