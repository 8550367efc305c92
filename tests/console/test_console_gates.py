"""Boot gates say pass or fail with the reason, against real failures."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from console_support import ConsoleServer, free_port, run, seed_workspace

from isokron.console.sessions import CSRF_HEADER
from isokron.governance import seeds
from isokron.provider.outbox import Outbox, outbox_path
from isokron.substrate import writes
from isokron.substrate.connection import connect
from isokron.substrate.dsn import SubstrateDSNs


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_gateway() -> Iterator[str]:
    """Something answering /healthz on 127.0.0.1, standing in for the gateway's health route."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def gates(server: ConsoleServer, token: str) -> tuple[dict[str, dict[str, str]], httpx.Client, str]:
    client = httpx.Client(base_url=server.url, timeout=60)
    resp = client.post("/api/session", json={"token": token})
    assert resp.status_code == 200, resp.text
    data = client.get("/api/panels/gates").json()["gates"]
    return {g["key"]: g for g in data}, client, resp.json()["csrf_token"]


async def _clean_workspace(admin: str) -> tuple[str, str]:
    ws = f"gates-{uuid.uuid4().hex[:8]}"
    conn = await connect(admin)
    try:
        created = await writes.create_workspace(conn, ws, seed=seeds.default_seed())
        op = created.actors["operator"]
        token = (await writes.issue_token(conn, ws, op, op)).token
        await writes.issue_token(conn, ws, op, created.actors["kora"])
        return ws, token
    finally:
        await conn.close()


def test_gates_pass_on_a_clean_workspace_with_a_checkpoint(
    substrate: SubstrateDSNs, tmp_path: Path, fake_gateway: str
) -> None:
    ws, token = run(_clean_workspace(substrate.admin))
    home = tmp_path / "hermes-home"
    home.mkdir()
    path = outbox_path(home)
    with ConsoleServer(
        substrate, tmp_path / "state", hermes_home=home, gateway_url=fake_gateway
    ) as server:
        by_key, client, csrf = gates(server, token)
        assert by_key["chain"]["status"] == "fail"
        assert "no checkpoint" in by_key["chain"]["reason"]
        assert by_key["outbox"]["status"] == "pass", by_key["outbox"]
        assert "no outbox" in by_key["outbox"]["reason"]
        assert not path.exists() and not path.parent.exists(), "reading the gate created it"
        assert (
            client.post("/api/checkpoint", json={}, headers={CSRF_HEADER: csrf}).status_code == 200
        )
        by_key = {g["key"]: g for g in client.get("/api/panels/gates").json()["gates"]}
        statuses = {k: g["status"] for k, g in by_key.items()}
        assert statuses == dict.fromkeys(statuses, "pass"), by_key

        # A real write waiting in the provider's real outbox, as a Hermes session leaves it
        # when the gateway is down; another workspace's write in the same file is not ours.
        outbox = Outbox(path)
        try:
            outbox.add(ws, "kora_note", {"idempotency_key": uuid.uuid4().hex}, "note 1")
            outbox.add("other-ws", "kora_note", {"idempotency_key": uuid.uuid4().hex}, "other")
            mode = path.stat().st_mode
            by_key = {g["key"]: g for g in client.get("/api/panels/gates").json()["gates"]}
            print(f"\noutbox gate with one write waiting: {by_key['outbox']}")
            assert by_key["outbox"]["status"] == "fail", by_key["outbox"]
            assert "1 write" in by_key["outbox"]["reason"]
            assert path.stat().st_mode == mode

            (item,) = outbox.pending(ws)
            outbox.delivered(item, replayed=False)
            by_key = {g["key"]: g for g in client.get("/api/panels/gates").json()["gates"]}
            assert by_key["outbox"]["status"] == "pass", by_key["outbox"]
            assert outbox.count() == 1  # the other workspace's write is still waiting
        finally:
            outbox.close()


def test_gates_name_what_is_wrong(substrate: SubstrateDSNs, tmp_path: Path) -> None:
    seeded = run(seed_workspace(substrate.admin, f"gates-bad-{uuid.uuid4().hex[:6]}"))
    with psycopg.connect(substrate.admin, autocommit=True) as conn:
        conn.execute(
            "UPDATE public.kora_role_charter SET content_md = content_md || ' (edited)' "
            "WHERE workspace_id = %s AND is_active",
            (seeded.workspace_id,),
        )
    nowhere = f"http://127.0.0.1:{free_port()}"
    with ConsoleServer(substrate, tmp_path / "state", gateway_url=nowhere) as server:
        by_key, _, _ = gates(server, seeded.operator_token)
    failed = {k for k, g in by_key.items() if g["status"] == "fail"}
    print(f"\ngates on a tampered workspace: failed {sorted(failed)}")
    assert {"charter", "chain", "gateway"} <= failed
    assert "SHA-256" in by_key["charter"]["reason"]
    assert "unreachable" in by_key["gateway"]["reason"]
    assert by_key["database"]["status"] == "pass" and by_key["migrations"]["status"] == "pass"
    assert by_key["outbox"]["status"] == "unknown"
    assert "--hermes-home" in by_key["outbox"]["reason"]
