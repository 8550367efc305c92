"""Console sessions: sign-in with an operator token, a cookie, and a CSRF token per session.

The browser holds only an opaque session id (HttpOnly, SameSite=Strict cookie). The console
keeps, in memory, the SHA-256 of the operator's token — the credential the database checks on
each write — never the token itself; the token crosses the wire once, in the sign-in POST body.
Every state-changing request must carry the session's CSRF token in ``X-IsoKron-CSRF`` and,
when the browser sends one, an ``Origin`` equal to the console's own.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from isokron.gateway.auth import Principal

log = logging.getLogger("isokron.console.sessions")

COOKIE_NAME = "isokron_console"
CSRF_HEADER = "x-isokron-csrf"
MAX_SESSIONS = 256


@dataclass(slots=True)
class Session:
    """One signed-in browser."""

    session_id: str
    principal: Principal
    token_sha256: bytes
    csrf_token: str
    read_only: bool
    created: float
    last_seen: float
    verify_jobs: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, object]:
        """What the browser may know about its session (no secret, no hash)."""
        return {
            "workspace_id": self.principal.workspace_id,
            "actor_id": self.principal.actor_id,
            "actor_kind": self.principal.actor_kind,
            "token_prefix": self.principal.token_prefix,
            "read_only": self.read_only,
            "csrf_token": self.csrf_token,
        }


class SessionStore:
    """In-memory sessions with idle and absolute expiry (a restart signs everyone out)."""

    def __init__(
        self,
        *,
        idle_seconds: float,
        max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions: dict[str, Session] = {}
        self._idle = idle_seconds
        self._max = max_seconds
        self._clock = clock

    def create(self, principal: Principal, token_sha256: bytes, *, read_only: bool) -> Session:
        now = self._clock()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.session_id]
        session = Session(
            session_id=secrets.token_urlsafe(32),
            principal=principal,
            token_sha256=token_sha256,
            csrf_token=secrets.token_urlsafe(32),
            read_only=read_only,
            created=now,
            last_seen=now,
        )
        self._sessions[session.session_id] = session
        log.info(
            "[isokron.console.signin] workspace=%s actor_kind=%s token=%s… read_only=%s",
            principal.workspace_id,
            principal.actor_kind,
            principal.token_prefix,
            read_only,
        )
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value, or None (and the expired one is dropped)."""
        if not session_id:
            return None
        now = self._clock()
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if now - session.last_seen > self._idle or now - session.created > self._max:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def drop_token(self, token_sha256: bytes) -> int:
        """End every session opened with a token (it was revoked); returns how many."""
        gone = [s for s in self._sessions.values() if s.token_sha256 == token_sha256]
        for s in gone:
            del self._sessions[s.session_id]
        return len(gone)

    def _expire(self, now: float) -> None:
        for s in list(self._sessions.values()):
            if now - s.last_seen > self._idle or now - s.created > self._max:
                del self._sessions[s.session_id]


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Constant-time comparison of the presented CSRF token with the session's."""
    return bool(presented) and hmac.compare_digest(session.csrf_token, presented or "")
