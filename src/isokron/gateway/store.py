"""The gateway's calls to the substrate through its own role (EXECUTE on isokron_api only).

A write-tool call costs one round trip: one statement consumes one unit of the actor's
per-minute budget (``isokron_api.consume_rate_limit``, stored in the database so it holds
across restarts and across gateway processes) and, in the same transaction, either performs
the write (``isokron_api.write``: the row and its chain event) or appends the denial event.

Design note on SUBMIT_SQL. The budget is consumed in a materialized CTE (it calls a volatile
function, so PostgreSQL evaluates it exactly once), and the CASE evaluates at most one of its
two ``isokron_api.write`` calls. If the write raises (a substrate refusal such as an unknown
node), the whole statement rolls back, budget unit included; the caller then submits the
denial, which consumes the unit again, so every call costs exactly one unit. The budget row
stays locked until the statement commits, which serializes one actor's writes; the chain head
already serializes a tenant's appends, so this adds no contention that was not there.

Every call carries the presented token's SHA-256 (``token_sha256``): the database resolves the
actor and workspace from it in the same transaction and refuses a revoked or expired token, so
the gateway role's DSN alone cannot write as anyone.

Denial events are bounded by the same budget: once an actor is over its limit, only the first
refused call of the minute is chained (``calls = limit + 1``); later ones are logged only, so
a runaway client cannot flood the chain with denials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from isokron.substrate.connection import translate_pg_error

SUBMIT_SQL = """
WITH budget AS (
    SELECT isokron_api.consume_rate_limit($2::bytea, $3) AS rate
)
SELECT rate,
       CASE WHEN (rate ->> 'allowed')::boolean
                THEN isokron_api.write($2::bytea, $4, $5::jsonb, $6, $1)
            WHEN (rate ->> 'calls')::int <= $3 + 1
                THEN isokron_api.write($2::bytea, 'record_denial', $7::jsonb, NULL, $1)
       END AS result
FROM budget
"""
HEALTH_SQL = "SELECT 1"

RECORD_DENIAL = "record_denial"


@dataclass(frozen=True, slots=True)
class Submitted:
    """What one submission did: the budget's answer and the write's (or denial's) result."""

    allowed: bool
    retry_after_seconds: int
    result: Mapping[str, Any] | None

    @property
    def event_id(self) -> str | None:
        return None if self.result is None else str(self.result.get("event_id"))


async def submit(
    pool: asyncpg.Pool,
    *,
    workspace_id: str,
    token_sha256: bytes,
    limit: int,
    op: str,
    args: Mapping[str, Any],
    idempotency_key: str | None,
    over_limit_denial: Mapping[str, Any],
) -> Submitted:
    """Consume one unit of the actor's budget and, within it, perform ``op`` with ``args``.

    Over the budget, ``over_limit_denial`` (``record_denial`` arguments) is chained instead,
    for the first call over only.

    Raises:
        RefusalError, NotFoundError, ConflictError: the substrate refused the operation.
        SubstrateError: the database failed.
    """
    try:
        row = await pool.fetchrow(
            SUBMIT_SQL,
            workspace_id,
            token_sha256,
            limit,
            op,
            dict(args),
            idempotency_key,
            dict(over_limit_denial),
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise translate_pg_error(exc) from exc
    assert row is not None
    rate = row["rate"]
    return Submitted(
        allowed=bool(rate["allowed"]),
        retry_after_seconds=int(rate["retry_after_seconds"]),
        result=row["result"],
    )


async def ping(pool: asyncpg.Pool) -> None:
    """Round-trip to the database through the gateway role (the health check)."""
    try:
        await pool.fetchval(HEALTH_SQL)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise translate_pg_error(exc) from exc
