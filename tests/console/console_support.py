"""Test support for the console: a seeded workspace and the console served on a real port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import uvicorn

from isokron.console import ConsoleSettings, create_app
from isokron.governance import seeds
from isokron.substrate import connection, writes
from isokron.substrate.dsn import SubstrateDSNs

# Real-shaped secrets planted in the workspace (the redaction test greps bundles for them).
PLANTED_SECRETS = {
    "slack": "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx",
    "sk": "sk-" + "proj" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4",
    "password_json": "hunter2-Correct-Horse",
    "dsn": "postgresql://app:" + "S3cretPassw0rd" + "@db.internal:5432/app",
}
OPERATOR_COPY = ("wsk_* token valid", "Token rotation — wsk_*")


@dataclass
class SeededWorkspace:
    workspace_id: str
    operator_token: str
    kora_token: str
    actors: dict[str, UUID]
    escalation_id: str
    planted_wsk: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def kora_write(conn: asyncpg.Connection, ws: SeededWorkspace, op: str, args: dict) -> Any:
    return await writes.write(conn, op, ws.workspace_id, ws.actors["kora"], args)


async def seed_workspace(admin_dsn: str, workspace_id: str) -> SeededWorkspace:
    """A workspace with data on every panel, real-shaped secrets planted in agent content."""
    conn = await connection.connect(admin_dsn)
    try:
        created = await writes.create_workspace(
            conn, workspace_id, "Console test", seed=seeds.default_seed()
        )
        op_id, kora_id = created.actors["operator"], created.actors["kora"]
        op_tok = await writes.issue_token(conn, workspace_id, op_id, op_id, label="console")
        kora_tok = await writes.issue_token(conn, workspace_id, op_id, kora_id, label="agent")
        ws = SeededWorkspace(workspace_id, op_tok.token, kora_tok.token, created.actors, "", "")
        # A second charter version, so the charter panel has a history and a diff to show.
        md2 = seeds.DEFAULT_CHARTER_MD.replace(
            "## Authority — can do\n",
            "## Authority — can do\n\n- Keep the release checklist current.\n",
        )
        assert md2 != seeds.DEFAULT_CHARTER_MD
        await writes.govern(
            conn,
            "set_charter",
            workspace_id,
            op_id,
            {"content_md": md2, "sections": dict(seeds.charter_sections_from_markdown(md2))},
        )
        ws.planted_wsk = kora_tok.token
        secret_text = (
            f"deploy notes: token {kora_tok.token} slack {PLANTED_SECRETS['slack']} "
            f"key {PLANTED_SECRETS['sk']} "
            f'cfg {{"db_password": "{PLANTED_SECRETS["password_json"]}"}} '
            f"dsn {PLANTED_SECRETS['dsn']}"
        )
        await kora_write(
            conn,
            ws,
            "write_scratchpad_entry",
            writes.scratchpad_args(
                kind="observation", summary="plain observation", content="the build is green"
            ),
        )
        drift = await kora_write(
            conn,
            ws,
            "write_scratchpad_entry",
            writes.scratchpad_args(
                kind="plan", summary="plan that will drift", content="step one, step two"
            ),
        )
        # A secret-bearing note: the default constitution would refuse it through the gateway,
        # so it is planted the way a compromised row would be — by the superuser.
        await conn.execute(
            "UPDATE kronicle.agent_scratchpad_entries SET content = $1, summary = $2 "
            "WHERE workspace_id = $3 AND entry_id = $4::uuid",
            "edited outside the write path",
            secret_text,
            workspace_id,
            drift["entry_id"],
        )
        a = await kora_write(
            conn,
            ws,
            "iso_node_create",
            {"node_type": "fact", "title": "Build is green", "content": "CI passes"},
        )
        b = await kora_write(
            conn,
            ws,
            "iso_node_create",
            {"node_type": "fact", "title": "Release 1.0 ready", "content": "tagged"},
        )
        c = await kora_write(
            conn,
            ws,
            "iso_node_create",
            {"node_type": "decision", "title": "Ship on Friday", "content": "agreed"},
        )
        await kora_write(
            conn,
            ws,
            "iso_link_create",
            {"from_node_id": a["node_id"], "to_node_id": b["node_id"], "link_type": "supports"},
        )
        d = await kora_write(
            conn,
            ws,
            "iso_node_supersede",
            {"node_id": c["node_id"], "title": "Ship on Monday", "reason": "moved"},
        )
        new_id = d.get("new_node_id") or d.get("node_id")
        await kora_write(
            conn,
            ws,
            "iso_link_create",
            {"from_node_id": b["node_id"], "to_node_id": new_id, "link_type": "enables"},
        )
        await kora_write(
            conn,
            ws,
            "propose_convention",
            {
                "title": "Name branches by issue",
                "body": "Branch names carry the issue number",
                "rationale": "traceable",
            },
        )
        await kora_write(
            conn,
            ws,
            "propose_policy_change",
            {
                "policy_key": "policy.kora_rate_limit_per_minute",
                "proposed_value": 90,
                "rationale": "bursts",
            },
        )
        esc = await kora_write(
            conn,
            ws,
            "raise_escalation",
            {
                "tool": "iso_node_create",
                "rule_id": "escalate-decisions",
                "reason": "decisions need an operator",
                "request": {
                    "op": "iso_node_create",
                    "args": {
                        "node_type": "decision",
                        "title": "Hire a tester",
                        "content": "approved by ops",
                    },
                },
            },
        )
        ws.escalation_id = esc["escalation_id"]
        for code in (
            "capability_denied",
            "rate_limited",
            "constitution_denied",
            "capability_denied",
        ):
            await kora_write(
                conn,
                ws,
                "record_denial",
                {"tool": "iso_node_create", "code": code, "reason": "refused in test"},
            )
        return ws
    finally:
        await conn.close()


class ConsoleServer:
    """The console app on a real 127.0.0.1 port, served by uvicorn in a thread."""

    def __init__(self, dsns: SubstrateDSNs, state_dir: Path, **kwargs: Any) -> None:
        self.port = free_port()
        kwargs.setdefault("gateway_url", None)
        self.settings = ConsoleSettings(dsns=dsns, state_dir=state_dir, **kwargs)
        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            access_log=False,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.settings.normalized_base_path()}"

    def __enter__(self) -> ConsoleServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the console server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def run(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh loop in its own thread (Playwright's sync API
    keeps an event loop running on the test's thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 — re-raised on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")
