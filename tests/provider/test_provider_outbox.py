"""The durable outbox (issue 11): its bound and policy, a lost answer replayed into exactly one
chain event, refusals kept for the operator, and ``isokron outbox status|flush``, against the
real substrate and a real gateway."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from provider_helpers import chain_events, tagged

from isokron.provider.outbox import Outbox, OutboxError, OutboxFullError, outbox_path
from isokron.provider.writes import APPEND_EVENT_TOOL
from isokron.substrate.dsn import SubstrateDSNs

ISOKRON = str(Path(sys.executable).with_name("isokron"))


def _event(n: int, key: str | None = None) -> dict[str, object]:
    return {
        "workspace_id": "ws",
        "event_type": "kora.outbox.tested",
        "payload": {"n": n},
        "idempotency_key": key or f"outbox-test:{n}",
    }


def test_outbox_is_durable_bounded_and_never_drops_an_accepted_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="isokron.provider.outbox")
    path = outbox_path(tmp_path)
    outbox = Outbox(path, max_pending=3)
    assert outbox._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    ids = [outbox.add("ws", APPEND_EVENT_TOOL, _event(n), f"w{n}") for n in range(3)]
    assert outbox.add("ws", APPEND_EVENT_TOOL, _event(1), "again") == ids[1]  # same key: once
    refused = 0
    for n in range(3, 6):
        with pytest.raises(OutboxFullError, match="full"):
            outbox.add("ws", APPEND_EVENT_TOOL, _event(n), f"w{n}")
        refused += 1
    full_lines = tagged(caplog, "[kora.outbox.full]", logging.ERROR)
    print(f"\n  bound 3: accepted 3, refused {refused} new writes, ERROR lines {len(full_lines)}")
    assert len(full_lines) == 1  # once per episode
    assert [item.arguments["payload"] for item in outbox.pending("ws")] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]
    outbox.close()
    # Another process (here: another connection) sees every accepted write.
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM outbox").fetchone()[0] == 3
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_unwritable_outbox_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "isokron"
    blocker.write_text("not a directory")
    with pytest.raises(OutboxError, match="cannot open the IsoKron outbox"):
        Outbox(outbox_path(tmp_path))


def test_a_lost_answer_is_replayed_into_exactly_one_event(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    """The host dies after the gateway wrote, before the outbox forgot the write: the next
    delivery sends it again with its key and the gateway answers with the first result."""
    ws = kora_workspace()
    provider = make_provider(ws)
    writer = provider._writer
    assert writer is not None
    real_delivered = writer.outbox.delivered
    crashes = 0

    def crash_before_forgetting(item: object, *, replayed: bool) -> None:
        nonlocal crashes
        crashes += 1
        raise OutboxError("simulated crash between the gateway's answer and the delete")

    writer.outbox.delivered = crash_before_forgetting  # type: ignore[method-assign]
    provider.on_session_end([])
    assert writer.pending == 1 and crashes == 1
    writer.outbox.delivered = real_delivered  # type: ignore[method-assign]
    writer.flush(force=True)
    status = writer.outbox.status()
    events = [
        e
        for e in chain_events(substrate.admin, ws.workspace_id)
        if e["event_type"] == "kora.session.ended"
    ]
    print(
        f"\n  sends of the write: 2; session-ended events in the chain: {len(events)}; "
        f"replayed: {status['replayed_total']}"
    )
    assert writer.pending == 0 and len(events) == 1 and status["replayed_total"] == 1


def test_refusals_are_kept_and_outbox_status_and_flush_report(
    substrate: SubstrateDSNs, kora_workspace, make_provider, tmp_path: Path
) -> None:
    ws = kora_workspace()
    home = tmp_path / "home"
    provider = make_provider(ws, hermes_home=home)
    writer = provider._writer
    assert writer is not None
    # A write the gateway refuses (an event type outside kora.*) is kept, marked refused.
    refused = writer.write(
        APPEND_EVENT_TOOL,
        {
            "workspace_id": ws.workspace_id,
            "event_type": "gateway.write.denied",
            "payload": {},
            "idempotency_key": "refused:1",
        },
        what="a write the gateway refuses",
    )
    assert refused is None
    provider.shutdown()
    # Two writes wait for the next session (put there as a provider of this home would).
    outbox = Outbox(outbox_path(home))
    for n in (1, 2):
        outbox.add(
            ws.workspace_id,
            APPEND_EVENT_TOOL,
            {**_event(n), "workspace_id": ws.workspace_id},
            f"w{n}",
        )
    outbox.close()
    env = dict(
        os.environ,
        HERMES_HOME=str(home),
        ISOKRON_READER_DSN=substrate.reader,
        ISOKRON_GATEWAY_DSN=substrate.gateway,
        ISOKRON_WORKSPACE_ID=ws.workspace_id,
        KORA_SERVICE_TOKEN=ws.token,
    )
    status = json.loads(
        subprocess.run(
            [ISOKRON, "outbox", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    )
    print(f"\n  outbox status: pending {status['pending']}, refused {status['refused_total']}")
    assert status["pending"] == 2 and status["refused_total"] == 1
    assert status["recent_refusals"][0]["what"] == "a write the gateway refuses"
    flushed = subprocess.run(
        [ISOKRON, "outbox", "flush", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert flushed.returncode == 0, flushed.stderr
    report = json.loads(flushed.stdout)
    print(f"  outbox flush: {report}")
    assert report["delivered"] == 2 and report["waiting_after"] == 0
    types = [e["event_type"] for e in chain_events(substrate.admin, ws.workspace_id)]
    assert types.count("kora.outbox.tested") == 2
    human = subprocess.run(
        [ISOKRON, "outbox", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "waiting: 0 write(s)" in human and "refused: 1" in human
