"""`isokron console` and the dashboard part of `isokron hermes install`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx
from console_support import free_port
from typer.testing import CliRunner

from isokron.cli.main import app
from isokron.provider.install import install_hermes_plugin
from isokron.substrate.dsn import SubstrateDSNs


def test_console_refuses_a_non_loopback_bind(substrate: SubstrateDSNs) -> None:
    result = CliRunner().invoke(app, ["console", "--host", "0.0.0.0", "--dsn", substrate.admin])
    assert result.exit_code == 1
    assert "not a loopback address" in result.output


def test_isokron_console_serves_the_page_and_its_assets(
    substrate: SubstrateDSNs, tmp_path: Path
) -> None:
    port = free_port()
    isokron = Path(sys.executable).with_name("isokron")
    proc = subprocess.Popen(
        [
            str(isokron),
            "console",
            "--port",
            str(port),
            "--dsn",
            substrate.admin,
            "--base-path",
            "/ops/isokron",
            "--state-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                page = httpx.get(base + "/")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("isokron console did not start")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # The base path is honoured for every URL the page's browser follows (reverse proxies).
        assert 'src="/ops/isokron/static/console.js"' in page.text
        assert 'data-base="/ops/isokron"' in page.text
        js = httpx.get(base + "/static/console.js")
        assert js.status_code == 200 and "diagBundleHref" in js.text
        assert httpx.get(base + "/static/../app.py").status_code == 404
        assert httpx.get(base + "/api/session").json()["signed_in"] is False
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode()
    assert f"http://127.0.0.1:{port}/ops/isokron/" in out


def test_hermes_install_writes_the_dashboard_tab(tmp_path: Path) -> None:
    target = install_hermes_plugin(tmp_path)
    dash = target / "dashboard"
    manifest = json.loads((dash / "manifest.json").read_text())
    assert manifest["name"] == "isokron" and manifest["tab"]["path"] == "/isokron"
    assert manifest["entry"] == "dist/index.js" and manifest["api"] == "plugin_api.py"
    packaged = (resources.files("isokron.console") / "static" / "console.js").read_text("utf-8")
    assert (dash / "dist" / "index.js").read_text().endswith(packaged)
    assert "make_router" in (dash / "plugin_api.py").read_text()
    assert install_hermes_plugin(tmp_path) == target  # upgrading in place keeps working
