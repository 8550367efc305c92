"""Connections to the substrate, and the one boundary where asyncpg errors become ours.

Per-connection setup (the JSONB codec) lives in one ``init`` hook used by every pool and every
single connection. Library code borrows a pool it is given and never closes it.
"""

from __future__ import annotations

import inspect
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from isokron.errors import (
    ConflictError,
    NotFoundError,
    RefusalError,
    SubstrateError,
    SubstrateUnavailableError,
)
from isokron.substrate.dsn import redact_dsn, validate_dsn

log = logging.getLogger("isokron.substrate")

SET_WORKSPACE_SQL = "SELECT set_config('app.current_workspace_id', $1, true)"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_COMMAND_TIMEOUT = 30.0


async def init_connection(conn: asyncpg.Connection) -> None:
    """Register the JSONB/JSON codecs so values arrive as Python objects."""
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def connect(dsn: str, *, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> asyncpg.Connection:
    """Open one connection with IsoKron's per-connection setup."""
    validate_dsn(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=DEFAULT_COMMAND_TIMEOUT)
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
) -> asyncpg.Pool:
    """Create an asyncpg pool with the JSONB codec registered on every connection; ``timeout``
    bounds each connection attempt, ``command_timeout`` each statement."""
    validate_dsn(dsn)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            **_initial_size(min_size),
            max_size=max_size,
            timeout=timeout,
            command_timeout=command_timeout,
            init=init_connection,
        )
    except Exception as exc:
        raise translate_connect_error(exc, dsn) from exc
    assert pool is not None
    return pool


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


# SQLSTATEs raised by the substrate's own functions (see migrations/0005).
_IK_CODES: dict[str, str] = {
    "IKV01": "invalid_argument",
    "IKN01": "not_found",
    "IKC01": "conflict",
    "IKC02": "conflict",
    "IKD01": "capability_denied",
}
# PostgreSQL classes and states we rely on, mapped to refusal codes.
_PG_CODES: dict[str, str] = {
    "23505": "conflict",  # unique_violation
    "23503": "not_found",  # foreign_key_violation
    "23514": "invalid_argument",  # check_violation
    "23502": "invalid_argument",  # not_null_violation
    "22P02": "invalid_argument",  # invalid_text_representation
    "22021": "invalid_argument",  # character_not_in_repertoire (NUL, bad UTF-8)
    "22P05": "invalid_argument",  # untranslatable_character (\u0000 in JSON)
    "22001": "invalid_argument",  # string_data_right_truncation
    "22003": "invalid_argument",  # numeric_value_out_of_range
    "22007": "invalid_argument",  # invalid_datetime_format
    "22008": "invalid_argument",  # datetime_field_overflow
    "54001": "invalid_argument",  # statement_too_complex (very deep JSON)
}


def translate_pg_error(exc: BaseException) -> BaseException:
    """Map an asyncpg/PostgreSQL error to IsoKron's error tree (the one translation boundary).

    Anticipated refusals become :class:`RefusalError` with a stable code; an unreachable server
    becomes :class:`SubstrateUnavailableError`; anything else from the server a
    :class:`SubstrateError` carrying its SQLSTATE. Non-database exceptions are returned as-is.
    """
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        message = _server_message(exc)
        code = _IK_CODES.get(sqlstate) or _PG_CODES.get(sqlstate)
        if code == "not_found" and sqlstate.startswith("IK"):
            return NotFoundError(message, sqlstate=sqlstate)
        if code == "conflict" and sqlstate.startswith("IK"):
            return ConflictError(message, sqlstate=sqlstate)
        if code is not None:
            return RefusalError(code, message, details={"sqlstate": sqlstate})
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return SubstrateError(f"permission denied: {message}", sqlstate=sqlstate)
        if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
            return SubstrateUnavailableError(
                f"the database went away: {message}", sqlstate=sqlstate
            )
        return SubstrateError(message, sqlstate=sqlstate)
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return SubstrateUnavailableError(f"the database connection is unusable: {exc}")
    if isinstance(exc, ConnectionError | OSError | TimeoutError):
        return SubstrateUnavailableError(f"the database could not be reached: {exc}")
    return exc


def translate_connect_error(exc: BaseException, dsn: str) -> BaseException:
    """Translate a failure to connect into one actionable line naming the (redacted) DSN."""
    where = redact_dsn(dsn)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return SubstrateUnavailableError(f"database does not exist at {where}: {exc}")
    if isinstance(
        exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError
    ):
        return SubstrateUnavailableError(f"the server refused the login at {where}: {exc}")
    if isinstance(exc, socket.gaierror):
        return SubstrateUnavailableError(f"unknown host in {where}: {exc}")
    if isinstance(exc, ConnectionError | OSError | TimeoutError):
        return SubstrateUnavailableError(
            f"cannot reach PostgreSQL at {where} ({exc.__class__.__name__}: {exc}); "
            "is the server running?"
        )
    translated = translate_pg_error(exc)
    return translated


def _server_message(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return str(msg)


async def run(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    """fetchval with errors translated; for one-shot calls of substrate functions."""
    try:
        return await conn.fetchval(sql, *args)
    except asyncpg.PostgresError as exc:
        raise translate_pg_error(exc) from exc
