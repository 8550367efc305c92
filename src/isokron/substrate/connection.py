"""Connections to the substrate (driver errors become ours in ``database_errors``).

Per-connection setup (the JSONB codec) lives in one ``init`` hook used by every pool and every
single connection. Library code borrows a pool it is given and never closes it.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from isokron.substrate.database_errors import DRIVER_ERRORS, translate, translate_connect_error
from isokron.substrate.dsn import validate_dsn

log = logging.getLogger("isokron.substrate")

# isokron.set_local is SET LOCAL with bind parameters: on Citus it reaches the workers where
# row-level security is evaluated (set_config would not); see migration 0040.
SET_WORKSPACE_SQL = "SELECT isokron.set_local('app.current_workspace_id', $1, true)"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_COMMAND_TIMEOUT = 30.0


CITUS_INSTALLED_SQL = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"


class SubstrateConnection(asyncpg.Connection):
    """An asyncpg connection that knows whether its server runs Citus.

    Only Citus needs an entry-point call wrapped in BEGIN ... COMMIT (see
    :func:`fetch_in_transaction`). On one PostgreSQL server a single statement is its own
    transaction: it commits even when its client has died meanwhile, so a retry with the same
    idempotency key is answered from the record (tests/reliability, kill -9), and the write costs
    one round trip instead of three.
    """

    #: Until :func:`init_connection` has looked, assume the cautious (Citus) path.
    on_citus: bool = True


async def init_connection(conn: asyncpg.Connection) -> None:
    """Register the JSONB/JSON codecs so values arrive as Python objects; note Citus."""
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
    if isinstance(conn, SubstrateConnection):
        conn.on_citus = bool(await conn.fetchval(CITUS_INSTALLED_SQL))


async def connect(
    dsn: str,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Connection:
    """Open one connection with IsoKron's per-connection setup (``server_settings``: session
    settings sent with the connection request, e.g. ``statement_timeout``)."""
    validate_dsn(dsn)
    try:
        conn = await asyncpg.connect(
            dsn,
            timeout=timeout,
            command_timeout=DEFAULT_COMMAND_TIMEOUT,
            connection_class=SubstrateConnection,
            server_settings=server_settings,
        )
    except Exception as exc:  # translated at this boundary
        raise translate_connect_error(exc, dsn) from exc
    await init_connection(conn)
    return conn


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    session_state: bool = True,
) -> asyncpg.Pool:
    """Create an asyncpg pool with the JSONB codec registered on every connection; ``timeout``
    bounds each connection attempt, ``command_timeout`` each statement.

    ``session_state=False``: the pool's users set nothing beyond their own transaction (the
    workspace is ``SET LOCAL`` through ``isokron.set_local``; no session advisory locks, no
    cursors outside a transaction, no LISTEN) — the provider's and the gateway's pools. A
    released connection then only has an open transaction rolled back, instead of asyncpg's
    full session reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): one
    round trip less per read or write, about a tenth of the gateway's CPU per write."""
    validate_dsn(dsn)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            **_initial_size(min_size),
            max_size=max_size,
            timeout=timeout,
            command_timeout=command_timeout,
            init=init_connection,
            connection_class=SubstrateConnection,
            reset=None if session_state else _rollback_only,
        )
    except Exception as exc:
        raise translate_connect_error(exc, dsn) from exc
    assert pool is not None
    return pool


async def _rollback_only(conn: asyncpg.Connection) -> None:
    """The reset of a pool without session state: asyncpg has already rolled back an open
    transaction."""
    return None


def _initial_size(min_size: int) -> dict[str, int]:
    """``min_size`` connections at creation (which proves the server is there), and no floor:
    asyncpg 0.32 keeps a pool at ``min_size`` by reconnecting in the background, and logs every
    failed attempt with a traceback while the server is down; IsoKron's callers report an
    outage once instead. Older asyncpg has no floor (nor ``init_size``)."""
    if _HAS_INIT_SIZE:
        return {"init_size": min_size, "min_size": 0}
    return {"min_size": min_size}


_HAS_INIT_SIZE = "init_size" in inspect.signature(asyncpg.create_pool).parameters


@asynccontextmanager
async def workspace_transaction(
    conn: asyncpg.Connection, workspace_id: str
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction scoped to one workspace: RLS shows that workspace's rows and no other's."""
    async with conn.transaction():
        await conn.execute(SET_WORKSPACE_SQL, workspace_id)
        yield conn


async def fetch_in_transaction(
    db: asyncpg.Connection | asyncpg.Pool, sql: str, *args: Any, row: bool = False
) -> Any:
    """``fetchval`` (or ``fetchrow``) of one entry-point call, inside a transaction block.

    On Citus a read-only statement runs on a worker outside any transaction block unless the
    client opened one, and then the workspace scope set by ``isokron.set_local`` (SET LOCAL) is
    not sent with it: row-level security on the worker would see no workspace at all. So every
    call of an entry point runs in BEGIN ... COMMIT (docs/scaling.md). On one PostgreSQL server
    this is not needed, and is skipped (:class:`SubstrateConnection`). Errors are not translated
    here.
    """
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await fetch_in_transaction(conn, sql, *args, row=row)
    fetch = db.fetchrow if row else db.fetchval
    if db.is_in_transaction() or not getattr(db, "on_citus", True):
        return await fetch(sql, *args)
    async with db.transaction():
        return await fetch(sql, *args)


async def run(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    """fetchval in a transaction, errors translated; for one-shot calls of substrate functions."""
    try:
        return await fetch_in_transaction(conn, sql, *args)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
