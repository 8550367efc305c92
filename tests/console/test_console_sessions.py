"""Session expiry and CSRF comparison (an injected clock; no server needed)."""

from __future__ import annotations

from isokron.console.sessions import SessionStore, csrf_ok
from isokron.gateway.auth import Principal

OPERATOR = Principal("ws", "a1", "operator", "t1", "wsk_AbCdEfGh")


def test_sessions_expire_when_idle_and_at_their_maximum_age() -> None:
    now = [0.0]
    store = SessionStore(idle_seconds=60, max_seconds=300, clock=lambda: now[0])
    s = store.create(OPERATOR, b"h" * 32, read_only=False)
    for t in (30, 89, 148, 207, 266):  # each request within the idle window keeps it alive
        now[0] = t
        assert store.get(s.session_id) is s
    now[0] = 301  # but never past the maximum age
    assert store.get(s.session_id) is None
    s2 = store.create(OPERATOR, b"h" * 32, read_only=False)
    now[0] += 61
    assert store.get(s2.session_id) is None
    assert store.get("") is None and store.get("forged") is None


def test_revoked_token_drops_every_session_opened_with_it() -> None:
    store = SessionStore(idle_seconds=60, max_seconds=300)
    a = store.create(OPERATOR, b"a" * 32, read_only=False)
    b = store.create(OPERATOR, b"a" * 32, read_only=True)
    c = store.create(OPERATOR, b"c" * 32, read_only=False)
    assert store.drop_token(b"a" * 32) == 2
    assert store.get(a.session_id) is None and store.get(b.session_id) is None
    assert store.get(c.session_id) is c


def test_csrf_tokens_are_compared_whole() -> None:
    store = SessionStore(idle_seconds=60, max_seconds=300)
    s = store.create(OPERATOR, b"a" * 32, read_only=False)
    assert csrf_ok(s, s.csrf_token)
    for forged in (None, "", s.csrf_token[:-1], s.csrf_token + "x", s.csrf_token.upper()):
        assert not csrf_ok(s, forged)
    assert "csrf_token" in s.public() and "token_sha256" not in s.public()
