"""Console fixtures: a seeded workspace, the console on a real port, a real Chromium."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import ConsoleServer, SeededWorkspace, run, seed_workspace

from isokron.substrate.dsn import SubstrateDSNs

CHROMIUM_ENV = "ISOKRON_CHROMIUM"
SCREENSHOT_ENV = "ISOKRON_SCREENSHOT_DIR"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def seeded(substrate: SubstrateDSNs) -> SeededWorkspace:
    return run(seed_workspace(substrate.admin, f"console-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def console(substrate: SubstrateDSNs, tmp_path: Path) -> Iterator[ConsoleServer]:
    with ConsoleServer(substrate, tmp_path / "console-state") as server:
        yield server


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium (installed by .ci/run); Playwright's own download is not used."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium")
    if not path:
        pytest.fail(
            "no chromium found: apt-get install -y chromium (or set ISOKRON_CHROMIUM)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[object]:
    """A Chromium per test module: Playwright's sync API runs an event loop on this thread
    while it is started, so it is stopped before the suite's asyncio tests run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """Where the browser tests write one screenshot per panel (README names this folder)."""
    path = Path(os.environ.get(SCREENSHOT_ENV) or REPO / "docs" / "screenshots" / "console")
    path.mkdir(parents=True, exist_ok=True)
    return path
