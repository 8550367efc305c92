"""Set-up that explains itself (issue 11), through the real ``hermes`` command of hermes-agent
0.19.0: ``hermes memory setup isokron`` without a terminal, ``hermes memory status``, and the
WARNING a session logs without a workspace."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from provider_helpers import create_kora_workspace

from isokron.provider import IsoKronMemoryProvider, install_hermes_plugin
from isokron.provider.config import ENV_VARS
from isokron.substrate.dsn import SubstrateDSNs

HERMES = str(Path(sys.executable).with_name("hermes"))


def _env(home: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS.values()}
    env.update(HERMES_HOME=str(home), NO_COLOR="1", **values)
    return env


def _hermes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HERMES, *args],
        env=env,
        stdin=subprocess.DEVNULL,  # no terminal: the non-interactive path
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "hermes"
    path.mkdir()
    install_hermes_plugin(path)
    return path


def test_setup_without_settings_says_what_to_set_and_run(home: Path) -> None:
    setup = _hermes(_env(home), "memory", "setup", "isokron")
    print(setup.stdout)
    assert setup.returncode == 0, setup.stderr
    for var in ("ISOKRON_READER_DSN", "ISOKRON_WORKSPACE_ID", "KORA_SERVICE_TOKEN"):
        assert var in setup.stdout
    assert "isokron up" in setup.stdout and "isokron token issue" in setup.stdout
    assert "hermes memory setup isokron" in setup.stdout
    config = yaml.safe_load((home / "config.yaml").read_text())
    assert config["memory"]["provider"] == "isokron"

    status = _hermes(_env(home), "memory", "status")
    print(status.stdout)
    assert "warning: IsoKron is off until" in status.stdout
    assert "ISOKRON_WORKSPACE_ID" in status.stdout
    missing = status.stdout.split("Missing:", 1)[1] if "Missing:" in status.stdout else ""
    # optional settings are never listed as missing
    for optional in ("ISOKRON_MCP_ENDPOINT", "ISOKRON_CACHE_TTL_SECONDS"):
        assert optional not in missing


def test_setup_from_the_environment_writes_env_and_settings(
    home: Path, substrate: SubstrateDSNs
) -> None:
    ws = create_kora_workspace(substrate.admin, "setup")
    env = _env(
        home,
        ISOKRON_READER_DSN=substrate.reader,
        ISOKRON_GATEWAY_DSN=substrate.gateway,
        ISOKRON_WORKSPACE_ID=ws.workspace_id,
        KORA_SERVICE_TOKEN=ws.token,
    )
    setup = _hermes(env, "memory", "setup", "isokron")
    print(setup.stdout)
    assert setup.returncode == 0, setup.stderr
    assert "IsoKron is ready" in setup.stdout
    dotenv = (home / ".env").read_text()
    assert f"KORA_SERVICE_TOKEN={ws.token}" in dotenv
    assert f"ISOKRON_WORKSPACE_ID={ws.workspace_id}" in dotenv
    assert oct((home / ".env").stat().st_mode & 0o777) == "0o600"
    settings = (home / "isokron.json").read_text()
    assert "_reader@" in settings and ws.token not in settings

    # A later shell has only what setup wrote: Hermes loads .env, the provider is available.
    status = _hermes(_env(home), "memory", "status")
    print(status.stdout)
    assert "available ✓" in status.stdout, status.stdout
    assert "warning" not in status.stdout
    assert ws.token not in status.stdout  # the secret is shown as "set"


def test_a_session_without_workspace_logs_a_warning_naming_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HERMES_HOME", str(home))
    monkeypatch.setenv("ISOKRON_READER_DSN", "postgresql://isokron_reader@127.0.0.1:1/x")
    monkeypatch.setenv("ISOKRON_GATEWAY_DSN", "postgresql://isokron_gateway@127.0.0.1:1/x")
    caplog.set_level(logging.INFO, logger="isokron.provider")
    assert IsoKronMemoryProvider().is_available() is False
    [line] = [r for r in caplog.records if "[isokron.provider.unavailable]" in r.getMessage()]
    assert line.levelno == logging.WARNING and "ISOKRON_WORKSPACE_ID" in line.getMessage()
