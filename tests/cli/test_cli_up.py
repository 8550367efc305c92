"""`isokron up`: migrate and create the demo workspace, idempotently; on a given DSN and on the
embedded default (the README's first command)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from cli_support import CLEAN_ENV, Cli
from yoyo import read_migrations

from isokron.substrate.dsn import database_name, database_roles
from isokron.substrate.migrate import migrations_dir

ISOKRON = str(Path(sys.executable).with_name("isokron"))


def test_up_on_a_fresh_database_migrates_and_creates_the_demo_workspace(
    cli: Cli, fresh_database: Callable[[], str]
) -> None:
    dsn = fresh_database()

    first = cli.ok("up", dsn=dsn).stdout
    assert "IsoKron is up" in first
    assert "workspace   demo (created)" in first
    assert "isokron token issue demo" in first  # it says what to do next

    second = cli.ok("up", dsn=dsn).stdout
    assert "workspace   demo (already there)" in second
    info = cli.json("up", dsn=dsn)
    assert info["workspace"] == "demo" and info["workspace_created"] is False
    assert info["embedded"] is False
    reader_role = database_roles(database_name(dsn)).reader
    assert info["reader_dsn"].startswith(f"postgresql://{reader_role}@")

    assert [w["workspace_id"] for w in cli.json("workspace", "list", dsn=dsn)] == ["demo"]
    verified = cli.json("verify", "demo", dsn=dsn)
    assert verified["ok"] is True and verified["chain"]["events_checked"] == 5
    with psycopg.connect(dsn) as conn:
        applied = conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()
    assert applied == (len(read_migrations(str(migrations_dir()))),)


def test_up_with_another_workspace_name(cli: Cli, fresh_database: Callable[[], str]) -> None:
    dsn = fresh_database()
    info = cli.json("up", "--workspace", "acme", dsn=dsn)
    assert info["workspace"] == "acme" and info["workspace_created"] is True
    assert cli.json("capability", "list", "acme", dsn=dsn)["actor_kind"] == "kora"


def test_db_upgrade_reports_what_it_applied(cli: Cli, fresh_database: Callable[[], str]) -> None:
    dsn = fresh_database()
    assert len(cli.json("db", "upgrade", dsn=dsn)["applied"]) == len(
        read_migrations(str(migrations_dir()))
    )
    assert cli.json("db", "upgrade", dsn=dsn)["applied"] == []
    assert "up to date" in cli.ok("db", "upgrade", dsn=dsn).stdout


# ------------------------------------------------------------------------ the embedded default
@pytest.fixture
def embedded_home() -> Iterator[dict[str, str]]:
    """An environment whose embedded PostgreSQL lives in a fresh, short temporary directory
    (the server's Unix socket path must stay short); the server is stopped afterwards."""
    base = Path(tempfile.mkdtemp(prefix="ik-up-"))
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["ISOKRON_DATA_DIR"] = str(base / "pgdata")
    yield env
    subprocess.run([ISOKRON, "down"], env=env, capture_output=True, timeout=120, check=False)
    shutil.rmtree(base, ignore_errors=True)


def _isokron(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ISOKRON, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_isokron_up_on_the_embedded_default_then_down(embedded_home: dict[str, str]) -> None:
    data_dir = Path(embedded_home["ISOKRON_DATA_DIR"])

    up = _isokron(embedded_home, "up")
    assert up.returncode == 0, up.stderr
    assert f"IsoKron is up on embedded PostgreSQL in {data_dir}" in up.stdout
    assert "workspace   demo (created)" in up.stdout
    assert (data_dir / "postmaster.pid").exists()

    again = _isokron(embedded_home, "up", "--json")
    assert again.returncode == 0, again.stderr
    info = json.loads(again.stdout)
    assert info["embedded"] is True and info["workspace_created"] is False
    assert info["data_dir"] == str(data_dir)

    verified = _isokron(embedded_home, "verify", "demo", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True

    down = _isokron(embedded_home, "down")
    assert down.returncode == 0, down.stderr
    assert "embedded PostgreSQL stopped" in down.stdout
    assert not (data_dir / "postmaster.pid").exists()
    assert "was not running" in _isokron(embedded_home, "down").stdout


def _serve_until_healthy(env: dict[str, str]) -> subprocess.Popen[bytes]:
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [ISOKRON, "serve", "--transport", "http", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
                if reply.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("isokron serve did not become healthy")


def test_down_stops_the_server_after_serve_was_killed(embedded_home: dict[str, str]) -> None:
    """Issue 11: an `isokron serve` stopped with SIGTERM or SIGKILL leaves its PID in pgserver's
    handle file; `down` must still stop the server, and say so only when it has."""
    import signal

    import psutil

    data_dir = Path(embedded_home["ISOKRON_DATA_DIR"])
    assert _isokron(embedded_home, "up").returncode == 0
    for sig in (signal.SIGKILL, signal.SIGTERM):
        server = _serve_until_healthy(embedded_home)
        server.send_signal(sig)
        server.wait(60)
    handles = json.loads((data_dir / ".handle_pids.json").read_text())
    stale = [pid for pid in handles if not psutil.pid_exists(pid)]
    postmaster = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    print(f"handle file before down: {handles} ({len(stale)} stale); postmaster pid {postmaster}")
    assert stale, "the killed serve left no stale PID: the fault was not reproduced"

    down = _isokron(embedded_home, "down")
    assert down.returncode == 0, down.stderr
    assert "embedded PostgreSQL stopped" in down.stdout
    assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == "zombie"
    assert not (data_dir / "postmaster.pid").exists()
    assert "was not running" in _isokron(embedded_home, "down").stdout
    # and it starts again on the same data
    assert _isokron(embedded_home, "up").returncode == 0
