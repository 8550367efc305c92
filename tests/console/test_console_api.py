"""The console's HTTP surface under attack: sign-in, CSRF, origin, read-only, revocation, logs.

Every test talks to the console served on a real port, backed by the real substrate; "nothing
chained" is checked by counting the workspace's chain events before and after.
"""

from __future__ import annotations

import json
import logging

import httpx
import psycopg
import pytest
from console_support import ConsoleServer, SeededWorkspace

from isokron.console.sessions import COOKIE_NAME, CSRF_HEADER
from isokron.substrate import audit
from isokron.substrate.dsn import SubstrateDSNs

COUNT_EVENTS_SQL = """
SELECT count(*) FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id WHERE t.clerk_org_id = %s
"""
LAST_EVENT_SQL = """
SELECT el.event_type, a.actor_kind FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
JOIN public.actor_registry a ON a.workspace_id = t.clerk_org_id AND a.actor_id = el.actor_id
WHERE t.clerk_org_id = %s ORDER BY el.seq DESC LIMIT %s
"""


def events(dsns: SubstrateDSNs, ws: str) -> int:
    with psycopg.connect(dsns.admin) as conn:
        return int(conn.execute(COUNT_EVENTS_SQL, (ws,)).fetchone()[0])  # type: ignore[index]


def last_events(dsns: SubstrateDSNs, ws: str, n: int) -> list[tuple[str, str]]:
    """The newest ``n`` events as (event_type, actor_kind), oldest first."""
    with psycopg.connect(dsns.admin) as conn:
        rows = conn.execute(LAST_EVENT_SQL, (ws, n)).fetchall()
    return [(r[0], r[1]) for r in reversed(rows)]


def last_event(dsns: SubstrateDSNs, ws: str) -> tuple[str, str]:
    return last_events(dsns, ws, 1)[0]


def sign_in(console: ConsoleServer, token: str, **extra: object) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=console.url)
    resp = client.post("/api/session", json={"token": token, **extra})
    assert resp.status_code == 200, resp.text
    return client, resp.json()["csrf_token"]


def test_sign_in_sets_a_safe_cookie_and_keeps_the_token_out_of_urls_and_logs(
    console: ConsoleServer, seeded: SeededWorkspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, csrf = sign_in(console, seeded.operator_token)
    cookie = client.cookies.jar
    header = [c for c in cookie if c.name == COOKIE_NAME][0]
    assert header.value != seeded.operator_token and seeded.operator_token[4:] not in header.value
    resp = client.get("/api/session")
    assert resp.json()["actor_kind"] == "operator" and "token" not in resp.json()
    again = client.post("/api/session", json={"token": seeded.operator_token})
    raw = again.headers["set-cookie"]
    assert "HttpOnly" in raw and "SameSite=strict" in raw.replace("Strict", "strict")
    assert again.json()["csrf_token"] != csrf  # a new sign-in is a new session
    csrf = again.json()["csrf_token"]
    assert "Content-Security-Policy" in resp.headers
    for panel in ("gates", "tokens", "chain", "scratchpad"):
        assert client.get(f"/api/panels/{panel}").status_code == 200
    issued = client.post(
        "/api/tokens", json={"actor_kind": "kora", "label": "x"}, headers={CSRF_HEADER: csrf}
    ).json()["token"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert seeded.operator_token not in logged and seeded.operator_token[12:] not in logged
    assert issued not in logged and issued[12:] not in logged
    assert seeded.operator_token[:12] in logged  # the public prefix names the operator


def test_refusals_at_sign_in(console: ConsoleServer, seeded: SeededWorkspace) -> None:
    client = httpx.Client(base_url=console.url)
    tried = caught = 0
    for body, status, code in (
        ({"token": seeded.kora_token}, 403, "capability_denied"),  # an agent's token
        ({"token": "wsk_" + "x" * 40}, 401, "unauthenticated"),  # well-formed, unknown
        ({"token": "not-a-token"}, 401, "unauthenticated"),
        ({}, 401, "unauthenticated"),
    ):
        tried += 1
        resp = client.post("/api/session", json=body)
        if resp.status_code == status and resp.json()["error"] == code:
            caught += 1
    tried += 1
    resp = client.post(
        "/api/session",
        json={"token": seeded.operator_token},
        headers={"Origin": "http://evil.test"},
    )
    caught += resp.status_code == 403 and COOKIE_NAME not in resp.cookies
    tried += 1
    caught += client.get("/api/panels/gates").status_code == 401
    assert client.get("/api/session").json()["signed_in"] is False
    print(f"\nsign-in refusals: {caught}/{tried} caught")
    assert caught == tried


def test_csrf_and_origin_are_required_for_every_change(
    console: ConsoleServer, seeded: SeededWorkspace, substrate: SubstrateDSNs
) -> None:
    client, csrf = sign_in(console, seeded.operator_token)
    before = events(substrate, seeded.workspace_id)
    attempts = [
        ("POST", "/api/policies", {"policy_key": "policy.kora_disabled", "value": True}),
        (
            "POST",
            f"/api/escalations/{seeded.escalation_id}/decision",
            {"decision": "approve", "reason": "x"},
        ),
        ("POST", "/api/tokens", {"actor_kind": "kora"}),
    ]
    tried = caught = 0
    for method, path, body in attempts:
        for headers in (
            {},
            {CSRF_HEADER: "forged"},
            {CSRF_HEADER: csrf, "Origin": "http://evil.test"},
        ):
            tried += 1
            resp = client.request(method, path, json=body, headers=headers)
            caught += resp.status_code == 403 and resp.json()["error"] == "csrf"
    after = events(substrate, seeded.workspace_id)
    print(f"\nCSRF/origin: {caught}/{tried} forged changes refused; events {before} -> {after}")
    assert caught == tried and after == before
    ok = client.post(
        "/api/policies",
        json={"policy_key": "policy.kora_disabled", "value": True},
        headers={CSRF_HEADER: csrf},
    )
    assert ok.status_code == 200, ok.text
    assert last_event(substrate, seeded.workspace_id) == ("governance.policy.set", "operator")


def test_read_only_sessions_change_nothing(
    console: ConsoleServer, seeded: SeededWorkspace, substrate: SubstrateDSNs
) -> None:
    client, csrf = sign_in(console, seeded.operator_token, read_only=True)
    assert client.get("/api/session").json()["read_only"] is True
    before = events(substrate, seeded.workspace_id)
    for path, body in (
        ("/api/policies", {"policy_key": "policy.kora_disabled", "value": True}),
        (
            f"/api/escalations/{seeded.escalation_id}/decision",
            {"decision": "reject", "reason": "x"},
        ),
        ("/api/tokens", {"actor_kind": "kora"}),
    ):
        resp = client.post(path, json=body, headers={CSRF_HEADER: csrf})
        assert resp.status_code == 403 and resp.json()["error"] == "read_only"
    assert events(substrate, seeded.workspace_id) == before
    assert client.get("/api/panels/chain").status_code == 200  # auditors read everything
    assert client.get("/api/diagnostics/bundle").status_code == 200


def test_a_server_wide_read_only_console(
    substrate: SubstrateDSNs, seeded: SeededWorkspace, tmp_path: object
) -> None:
    from pathlib import Path

    with ConsoleServer(substrate, Path(str(tmp_path)) / "ro", read_only=True) as ro:
        client, csrf = sign_in(ro, seeded.operator_token)
        assert client.get("/api/session").json()["server_read_only"] is True
        resp = client.post("/api/tokens", json={"actor_kind": "kora"}, headers={CSRF_HEADER: csrf})
        assert resp.status_code == 403 and resp.json()["error"] == "read_only"


def test_revoking_the_operator_token_ends_its_session(
    console: ConsoleServer, seeded: SeededWorkspace, substrate: SubstrateDSNs
) -> None:
    client, csrf = sign_in(console, seeded.operator_token)
    tokens = client.get("/api/panels/tokens").json()["tokens"]
    mine = [t for t in tokens if seeded.operator_token.startswith(t["token_prefix"])][0]
    resp = client.post(
        f"/api/tokens/{mine['token_id']}/revoke", json={}, headers={CSRF_HEADER: csrf}
    )
    assert resp.status_code == 200, resp.text
    assert last_event(substrate, seeded.workspace_id) == ("governance.token.revoked", "operator")
    assert client.get("/api/panels/gates").status_code == 401
    again = httpx.Client(base_url=console.url).post(
        "/api/session", json={"token": seeded.operator_token}
    )
    assert again.status_code == 401


def test_decisions_are_chained_by_the_operator_and_the_chain_still_verifies(
    console: ConsoleServer, seeded: SeededWorkspace, substrate: SubstrateDSNs
) -> None:
    client, csrf = sign_in(console, seeded.operator_token)
    no_reason = client.post(
        f"/api/escalations/{seeded.escalation_id}/decision",
        json={"decision": "approve", "reason": ""},
        headers={CSRF_HEADER: csrf},
    )
    assert no_reason.status_code == 400
    resp = client.post(
        f"/api/escalations/{seeded.escalation_id}/decision",
        json={"decision": "approve", "reason": "reviewed the held node"},
        headers={CSRF_HEADER: csrf},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "approved" and resp.json()["applied"]["node_id"]
    # The decision (by the operator) and, in the same transaction, the held write it performs
    # (by the agent that asked for it, its capability re-checked now).
    assert sorted(last_events(substrate, seeded.workspace_id, 2)) == [
        ("governance.escalation.decided", "operator"),
        ("kora.node.created", "kora"),
    ]
    twice = client.post(
        f"/api/escalations/{seeded.escalation_id}/decision",
        json={"decision": "reject", "reason": "again"},
        headers={CSRF_HEADER: csrf},
    )
    assert twice.status_code in (400, 409), twice.text
    proposals = client.get("/api/panels/proposals").json()["proposals"]
    pending = [p for p in proposals if p["status"] == "pending"][0]
    resp = client.post(
        f"/api/proposals/{pending['proposal_id']}/decision",
        json={"kind": pending["proposal_kind"], "decision": "accept", "reason": "fine"},
        headers={CSRF_HEADER: csrf},
    )
    assert resp.status_code == 200, resp.text
    assert last_event(substrate, seeded.workspace_id)[0] == "governance.proposal.decided"
    result = audit.verify_workspace(substrate.admin, seeded.workspace_id)
    assert result.chain.ok, json.dumps(result.to_dict())[:500]


def test_sessions_see_only_their_own_workspace(
    console: ConsoleServer, substrate: SubstrateDSNs, seeded: SeededWorkspace
) -> None:
    from console_support import run, seed_workspace

    other = run(seed_workspace(substrate.admin, f"console-other-{seeded.workspace_id[-4:]}"))
    client, _ = sign_in(console, seeded.operator_token)
    ids = {e["escalation_id"] for e in client.get("/api/panels/escalations").json()["escalations"]}
    assert seeded.escalation_id in ids and other.escalation_id not in ids
    chain = client.get("/api/chain?limit=500").json()["events"]
    assert chain and all(e["actor_kind"] is not None for e in chain)
    other_client, _ = sign_in(console, other.operator_token)
    theirs = other_client.get("/api/panels/tokens").json()["tokens"]
    assert not {t["token_prefix"] for t in theirs} & {
        t["token_prefix"] for t in client.get("/api/panels/tokens").json()["tokens"]
    }


def test_console_writes_need_no_admin_credentials(
    substrate: SubstrateDSNs, seeded: SeededWorkspace, tmp_path: object
) -> None:
    """The operator's writes go through the gateway role with the token's hash: a console whose
    "admin" DSN is only the read-only role still decides, and the database names the operator."""
    from pathlib import Path

    weak = SubstrateDSNs(admin=substrate.reader, reader=substrate.reader, gateway=substrate.gateway)
    with ConsoleServer(weak, Path(str(tmp_path)) / "weak") as server:
        client, csrf = sign_in(server, seeded.operator_token)
        resp = client.post(
            f"/api/escalations/{seeded.escalation_id}/decision",
            json={"decision": "reject", "reason": "not now"},
            headers={CSRF_HEADER: csrf},
        )
        assert resp.status_code == 200, resp.text
    assert last_event(substrate, seeded.workspace_id) == (
        "governance.escalation.decided",
        "operator",
    )


def test_the_database_refuses_governance_by_a_non_operator_token(
    substrate: SubstrateDSNs, seeded: SeededWorkspace
) -> None:
    """Even with the console's own operator check bypassed, an agent's token hash cannot govern."""
    from console_support import run

    from isokron.console.actions import OperatorActions, authenticate_digest
    from isokron.errors import RefusalError
    from isokron.substrate.connection import create_pool
    from isokron.substrate.writes import token_sha256

    async def attempt() -> str:
        reader = await create_pool(substrate.reader, min_size=0, max_size=1)
        gateway = await create_pool(substrate.gateway, min_size=0, max_size=1)
        try:
            digest = token_sha256(seeded.kora_token)
            kora = await authenticate_digest(gateway, digest, seeded.kora_token[:12])
            actions = OperatorActions(reader, gateway)
            try:
                await actions.set_policy(kora, digest, "policy.kora_disabled", False)
            except RefusalError as exc:
                return exc.code
            return "written"
        finally:
            await reader.close()
            await gateway.close()

    before = events(substrate, seeded.workspace_id)
    code = run(attempt())
    assert code != "written", "an agent's token set a policy"
    assert last_event(substrate, seeded.workspace_id)[0] != "governance.policy.set"
    print(
        f"\nagent token governing: refused ({code}); events {before} -> "
        f"{events(substrate, seeded.workspace_id)}"
    )


def test_dns_rebinding_host_is_refused(console: ConsoleServer, seeded: SeededWorkspace) -> None:
    client = httpx.Client(base_url=console.url)
    tried = caught = 0
    for host in ("evil.test", "evil.test:8770", "127.0.0.1.evil.test", "10.0.0.5"):
        tried += 1
        resp = client.post(
            "/api/session", json={"token": seeded.operator_token}, headers={"Host": host}
        )
        caught += resp.status_code == 400 and "set-cookie" not in resp.headers
    for host in ("127.0.0.1:1", "localhost", "[::1]:8770"):
        assert client.get("/api/session", headers={"Host": host}).status_code == 200
    print(f"\nDNS rebinding: {caught}/{tried} foreign Host headers refused")
    assert caught == tried
