"""Authentication: a ``wsk_`` service token becomes the actor a call is made by.

A token is checked for its shape before anything else (``wsk_`` and 40 letters or digits), so
a malformed one never reaches the database. A well-formed token is looked up by its SHA-256
through ``isokron_api.authenticate_token`` on the gateway role: the secret itself is never
compared, stored or logged; only its public prefix (``wsk_`` + 8 characters) is.

Lookups are cached for ``ttl`` seconds, keyed by the token's SHA-256. That TTL is the longest
a revocation, an expiry or a disabled actor can take to apply to a running gateway (0 turns
the cache off). Over HTTP the SDK asks :class:`GatewayTokenVerifier` on every request; over
stdio the gateway asks :class:`Authenticator` on every call with the token it was started with.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
from mcp.server.auth.provider import AccessToken, TokenVerifier

from isokron.errors import RefusalError
from isokron.gateway import decision_log
from isokron.substrate.connection import fetch_in_transaction
from isokron.substrate.database_errors import DRIVER_ERRORS, translate
from isokron.substrate.writes import (
    TOKEN_PREFIX,
    TOKEN_SECRET_LENGTH,
    token_public_prefix,
    token_sha256,
)

AUTHENTICATE_TOKEN_SQL = """
SELECT isokron_api.authenticate_token($1::bytea)
       || jsonb_build_object('issued_at',
                             extract(epoch FROM isokron_api.token_issued_at($1::bytea))::float8)
"""

TOKEN_SHAPE = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9]{{{TOKEN_SECRET_LENGTH}}}")
#: Most token lookups remembered at once; beyond it expired entries are dropped first.
MAX_CACHED_TOKENS = 4096

_STATUS_MESSAGES = {
    "revoked": "The service token {prefix}… was revoked; ask an operator for a new one.",
    "expired": "The service token {prefix}… has expired; ask an operator for a new one.",
    "actor_disabled": (
        "The actor that service token {prefix}… belongs to is disabled in its workspace; an "
        "operator can enable it again (isokron actor enable)."
    ),
}
MISSING_TOKEN_MESSAGE = (
    "No service token was given: set KORA_SERVICE_TOKEN for stdio, or send "
    "'Authorization: Bearer wsk_…' over HTTP."
)
MALFORMED_TOKEN_MESSAGE = (
    "The service token is malformed: a token is 'wsk_' followed by 40 letters and digits."
)
UNKNOWN_TOKEN_MESSAGE = (
    "The service token {prefix}… is not known to this substrate; ask an operator for a token."
)

#: Why the current HTTP request's token was refused, for the 401 reply (see server.py).
refusal_reason: ContextVar[str | None] = ContextVar("isokron_gateway_refusal_reason", default=None)
#: ... and its code (``unauthenticated`` or ``actor_disabled``).
refusal_code: ContextVar[str] = ContextVar(
    "isokron_gateway_refusal_code", default="unauthenticated"
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call is made by: an active actor of one workspace, through one token."""

    workspace_id: str
    actor_id: str
    actor_kind: str
    token_id: str
    token_prefix: str
    #: When the token was issued (Unix seconds), for policy.kora_service_token_max_age_days.
    issued_at: float | None = None
    #: Hex SHA-256 of the presented token: the credential every write carries to the database,
    #: which resolves the actor from it again (never logged; not the secret itself).
    token_sha256: str = ""

    def claims(self) -> dict[str, str]:
        """The principal as AccessToken claims (how it crosses the SDK's HTTP auth layer)."""
        return {
            "workspace_id": self.workspace_id,
            "actor_id": self.actor_id,
            "actor_kind": self.actor_kind,
            "token_id": self.token_id,
            "token_prefix": self.token_prefix,
            "issued_at": "" if self.issued_at is None else repr(self.issued_at),
            "token_sha256": self.token_sha256,
        }

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """Rebuild a principal from :meth:`claims`."""
        return cls(
            workspace_id=str(claims["workspace_id"]),
            actor_id=str(claims["actor_id"]),
            actor_kind=str(claims["actor_kind"]),
            token_id=str(claims["token_id"]),
            token_prefix=str(claims["token_prefix"]),
            issued_at=float(claims["issued_at"]) if claims.get("issued_at") else None,
            token_sha256=str(claims.get("token_sha256", "")),
        )


def is_well_formed(token: str | None) -> bool:
    """True for a string shaped like a service token (says nothing about its validity)."""
    return isinstance(token, str) and TOKEN_SHAPE.fullmatch(token) is not None


def loggable_prefix(token: str | None) -> str | None:
    """The part of ``token`` that may be logged: its public prefix, and only if well-formed.

    A malformed "token" may be some other secret pasted by mistake, so none of it is logged.
    """
    return token_public_prefix(token) if token is not None and is_well_formed(token) else None


def principal_from_record(
    record: Mapping[str, Any] | None, prefix: str, digest: bytes = b""
) -> Principal:
    """Turn an ``authenticate_token`` result into a principal, or raise ``unauthenticated``."""
    if record is None:
        raise RefusalError("unauthenticated", UNKNOWN_TOKEN_MESSAGE.format(prefix=prefix))
    status = record.get("status")
    if status != "active":
        template = _STATUS_MESSAGES.get(str(status), UNKNOWN_TOKEN_MESSAGE)
        code = "actor_disabled" if status == "actor_disabled" else "unauthenticated"
        raise RefusalError(code, template.format(prefix=prefix))
    return Principal(
        workspace_id=str(record["workspace_id"]),
        actor_id=str(record["actor_id"]),
        actor_kind=str(record["actor_kind"]),
        token_id=str(record["token_id"]),
        token_prefix=str(record.get("token_prefix") or prefix),
        issued_at=_seconds(record.get("issued_at")),
        token_sha256=digest.hex(),
    )


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Authenticator:
    """Resolves tokens to principals through the gateway role, with a short TTL cache."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl = ttl
        self._clock = clock
        # SHA-256 of the token -> (the lookup's record or None, monotonic expiry)
        self._cache: dict[bytes, tuple[Mapping[str, Any] | None, float]] = {}

    async def authenticate(self, token: str | None) -> Principal:
        """The principal ``token`` stands for.

        Raises:
            RefusalError: code ``unauthenticated`` for a missing, malformed, unknown, revoked or
                expired token; ``actor_disabled`` for one whose actor is disabled.
            SubstrateError: the database could not be asked.
        """
        if not token:
            raise RefusalError("unauthenticated", MISSING_TOKEN_MESSAGE)
        if not is_well_formed(token):
            raise RefusalError("unauthenticated", MALFORMED_TOKEN_MESSAGE)
        digest = token_sha256(token)
        prefix = token_public_prefix(token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return principal_from_record(cached[0], prefix, digest)
        record = await self._lookup(digest)
        if self._ttl > 0:
            self._remember(digest, record, now + self._cache_seconds(record), now)
        return principal_from_record(record, prefix, digest)

    def is_cached(self, token: str | None) -> bool:
        """True when :meth:`authenticate` can answer for ``token`` without the database (a
        missing or malformed token, or a lookup remembered and still fresh)."""
        if not token or not is_well_formed(token):
            return True
        cached = self._cache.get(token_sha256(token))
        return cached is not None and cached[1] > self._clock()

    def _cache_seconds(self, record: Mapping[str, Any] | None) -> float:
        # Never cache an active token past its own expiry.
        remaining = record.get("expires_in_seconds") if record else None
        if isinstance(remaining, int | float):
            return min(self._ttl, float(remaining))
        return self._ttl

    async def _lookup(self, digest: bytes) -> Mapping[str, Any] | None:
        try:
            record = await fetch_in_transaction(self._pool, AUTHENTICATE_TOKEN_SQL, digest)
        except DRIVER_ERRORS as exc:
            raise translate(exc) from exc
        return record if isinstance(record, Mapping) else None

    def _remember(
        self, digest: bytes, record: Mapping[str, Any] | None, expires: float, now: float
    ) -> None:
        if len(self._cache) >= MAX_CACHED_TOKENS:
            for key in [k for k, (_, exp) in self._cache.items() if exp <= now]:
                del self._cache[key]
            if len(self._cache) >= MAX_CACHED_TOKENS:
                self._cache.clear()
        self._cache[digest] = (record, expires)


class GatewayTokenVerifier(TokenVerifier):
    """The SDK's HTTP bearer-token hook: a valid ``wsk_`` token becomes an AccessToken.

    The AccessToken carries the principal in its claims; ``client_id`` is the token's id and
    ``subject`` its actor, so the SDK binds each HTTP session to the token that opened it.
    ``AccessToken.token`` holds only the public prefix: the secret does not outlive this call.
    A refused token makes the SDK answer HTTP 401 with ``WWW-Authenticate: Bearer
    error="invalid_token"``; the reason is logged and left in :data:`refusal_reason` for the
    reply. A database failure is not a verdict on the token: it propagates (HTTP 500).
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def verify_token(self, token: str) -> AccessToken | None:
        started = time.perf_counter()
        try:
            principal = await self._authenticator.authenticate(token)
        except RefusalError as refusal:
            decision_log.log_refused_token(
                refusal, token_prefix=loggable_prefix(token), started=started
            )
            refusal_reason.set(refusal.message)
            refusal_code.set(refusal.code)
            return None
        return AccessToken(
            token=principal.token_prefix,
            client_id=principal.token_id,
            subject=principal.actor_id,
            scopes=[],
            claims=principal.claims(),
        )
