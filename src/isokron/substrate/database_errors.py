"""The ONE place where database driver errors become IsoKron errors.

Both drivers IsoKron uses meet PostgreSQL here: asyncpg (pools of the gateway, the provider and
the CLI) and psycopg (migrations and ``verify``). :func:`translate` maps an exception of either
to the error tree of :mod:`isokron.errors`:

* a SQLSTATE the substrate's own functions raise (``IK...``, see :data:`SUBSTRATE_SQLSTATES`)
  or one of the PostgreSQL states we rely on (:data:`POSTGRES_SQLSTATES`) becomes a
  :class:`~isokron.errors.RefusalError` with its stable code, or a
  :class:`~isokron.errors.NotFoundError` / :class:`~isokron.errors.ConflictError`;
* connection failures (class 08, admin shutdown, a closed pool, an OS error) and a server
  out of resources (class 53: too many connections, memory, disk) become
  :class:`~isokron.errors.SubstrateUnavailableError`;
* any other server error a :class:`~isokron.errors.SubstrateError` carrying its SQLSTATE.

A test (``tests/substrate/test_database_errors.py``) reads every migration and fails if a
SQLSTATE raised there is not in :data:`SUBSTRATE_SQLSTATES`.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from typing import Any

import asyncpg

from isokron.errors import (
    ConflictError,
    NotFoundError,
    RefusalError,
    SubstrateError,
    SubstrateUnavailableError,
)
from isokron.substrate.dsn import redact_dsn

#: SQLSTATEs raised by the substrate's own SQL functions -> refusal code.
SUBSTRATE_SQLSTATES: Mapping[str, str] = {
    "IKV01": "invalid_argument",
    "IKN01": "not_found",
    "IKC01": "conflict",
    "IKC02": "conflict",  # idempotency key reused for a different request
    "IKD01": "capability_denied",
    "IKD02": "actor_disabled",
    "IKA01": "conflict",  # append-only violation: an event may not be changed or removed
    "IKU01": "unauthenticated",
    "IKW01": "workspace_mismatch",
}
#: PostgreSQL states we rely on -> refusal code.
POSTGRES_SQLSTATES: Mapping[str, str] = {
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
#: Server states meaning the connection, not the request, failed.
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
#: Class 53, insufficient resources (too many connections, out of memory, disk full): the
#: server cannot take the request now, whatever the request; a retry later may succeed.
INSUFFICIENT_RESOURCES_CLASS = "53"
INSUFFICIENT_PRIVILEGE = "42501"

#: What every asyncpg caller catches before calling :func:`translate` (psycopg callers catch
#: ``psycopg.Error``).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
)


def _psycopg() -> Any:
    """The psycopg module if this process imported it (the gateway and the provider never do:
    an error can only be psycopg's where psycopg is loaded, and importing it costs startup)."""
    return sys.modules.get("psycopg")


def refusal_code(sqlstate: str) -> str | None:
    """The refusal code of a SQLSTATE, or None when it is not an anticipated refusal."""
    return SUBSTRATE_SQLSTATES.get(sqlstate) or POSTGRES_SQLSTATES.get(sqlstate)


def translate(exc: BaseException) -> BaseException:
    """Map an asyncpg or psycopg error to IsoKron's error tree; other exceptions pass as-is."""
    server = _server_error(exc)
    if server is not None:
        return _from_server(*server)
    pg = _psycopg()
    if isinstance(exc, asyncpg.InterfaceError) or (
        pg is not None and isinstance(exc, pg.InterfaceError)
    ):
        return SubstrateUnavailableError(f"the database connection is unusable: {exc}")
    if pg is not None and isinstance(exc, pg.OperationalError):
        return SubstrateUnavailableError(f"the database could not be reached: {exc}")
    if isinstance(exc, ConnectionError | OSError | TimeoutError):
        return SubstrateUnavailableError(f"the database could not be reached: {exc}")
    return exc


def from_sqlstate(sqlstate: str, message: str) -> BaseException:
    """The error :func:`translate` makes of a server error with this SQLSTATE and primary
    message, for an error the database caught and returned as data (a group write's item,
    ``isokron_api.submit_group``)."""
    return _from_server(sqlstate, message)


def _server_error(exc: BaseException) -> tuple[str, str] | None:
    """(SQLSTATE, primary message) of an error the server reported, from either driver."""
    if isinstance(exc, asyncpg.PostgresError):
        message: Any = getattr(exc, "message", None) or str(exc)
        return (getattr(exc, "sqlstate", None) or "", str(message))
    pg = _psycopg()
    if pg is not None and isinstance(exc, pg.Error) and exc.sqlstate:
        primary = exc.diag.message_primary if exc.diag is not None else None
        return (exc.sqlstate, primary or str(exc))
    return None


def _from_server(sqlstate: str, message: str) -> BaseException:
    code = refusal_code(sqlstate)
    own = sqlstate.startswith("IK")
    if code == "not_found" and own:
        return NotFoundError(message, sqlstate=sqlstate)
    if code == "conflict" and own:
        return ConflictError(message, sqlstate=sqlstate)
    if code is not None:
        return RefusalError(code, message, details={"sqlstate": sqlstate})
    if sqlstate == INSUFFICIENT_PRIVILEGE:
        return SubstrateError(f"permission denied: {message}", sqlstate=sqlstate)
    if sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES:
        return SubstrateUnavailableError(f"the database went away: {message}", sqlstate=sqlstate)
    if sqlstate.startswith(INSUFFICIENT_RESOURCES_CLASS):
        return SubstrateUnavailableError(
            f"the database cannot take the request now: {message}", sqlstate=sqlstate
        )
    return SubstrateError(message, sqlstate=sqlstate)


def translate_connect_error(exc: BaseException, dsn: str) -> BaseException:
    """A failure to connect (either driver) as one actionable line naming the redacted DSN."""
    where = redact_dsn(dsn)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return SubstrateUnavailableError(f"database does not exist at {where}: {exc}")
    if isinstance(
        exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError
    ):
        return SubstrateUnavailableError(f"the server refused the login at {where}: {exc}")
    if isinstance(exc, socket.gaierror):
        return SubstrateUnavailableError(f"unknown host in {where}: {exc}")
    pg = _psycopg()
    unreachable: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError)
    if pg is not None:
        unreachable = (*unreachable, pg.OperationalError)
    if isinstance(exc, unreachable):
        return SubstrateUnavailableError(
            f"cannot reach PostgreSQL at {where} ({exc.__class__.__name__}: {exc}); "
            "is the server running?"
        )
    return translate(exc)
