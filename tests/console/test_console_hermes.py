"""The console as a tab of Hermes's own web dashboard (hermes-agent 0.19.0), in Chromium.

`isokron hermes install` writes the dashboard plugin; the real `hermes dashboard` serves it, and
the same walk-through as the standalone console runs inside the dashboard's page, through the
dashboard's authenticated plugin API routes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from browser_flow import PANEL_CHECKS, Walk
from console_support import SeededWorkspace, free_port

from isokron.provider.install import install_hermes_plugin
from isokron.substrate.dsn import SubstrateDSNs

START_TIMEOUT_S = 120


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hermes dashboard exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"hermes dashboard did not listen on {port}: {log.read_text()[-2000:]}")


@pytest.fixture
def hermes_dashboard(substrate: SubstrateDSNs, tmp_path: Path) -> Iterator[str]:
    home = tmp_path / "hermes-home"
    home.mkdir()
    plugin = install_hermes_plugin(home)
    assert (plugin / "dashboard" / "manifest.json").is_file()
    (home / "config.yaml").write_text(yaml.safe_dump({"plugins": {"enabled": ["isokron"]}}))
    port = free_port()
    env = {
        **os.environ,
        "HERMES_HOME": str(home),
        "ISOKRON_DSN": substrate.admin,
        "ISOKRON_GATEWAY_URL": "",
        "ISOKRON_CONSOLE_STATE_DIR": str(tmp_path / "console-state"),
    }
    hermes = Path(sys.executable).with_name("hermes")
    log = tmp_path / "hermes.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(hermes),
                "dashboard",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--no-open",
                "--skip-build",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_console_tab_inside_hermes_dashboard(
    browser: Any,
    hermes_dashboard: str,
    seeded: SeededWorkspace,
    screenshot_dir: Path,
    tmp_path: Path,
) -> None:
    page = browser.new_page(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    walk = Walk(page, screenshot_dir, "hermes-")
    page.goto(hermes_dashboard + "/isokron")
    page.wait_for_selector("#isokron-hermes-tab #ik-token", timeout=60_000)
    walk.sign_in(seeded.operator_token)
    walk.open("gates")
    page.wait_for_selector(".ik-gate[data-gate='charter'][data-status='pass']")
    walk.shot("01-gates")
    for panel, selector in PANEL_CHECKS.items():
        walk.open(panel)
        page.wait_for_selector(f"#ik-panel-{panel} {selector}")
    walk.decide_escalation(seeded)
    walk.shot("02-chain-after-decision")
    walk.change_policy("policy.kora_disabled", "true")
    walk.issue_and_revoke_token()
    manifest = walk.download_bundle(tmp_path)
    assert manifest["failed"] == 0 and manifest["workspace_id"] == seeded.workspace_id
    # Only our own console messages count; the dashboard's own resources are not under test.
    ours = [e for e in walk.errors if "isokron" in e.lower()]
    assert ours == [], ours
