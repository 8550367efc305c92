"""Fixtures of the reliability suite, and the figures it prints at the end of the run.

Every reliability test records what it measured in ``reliability_support.FIGURES``; the
session fixture ``figures`` writes them to ``reliability-figures.json`` in pytest's temporary
directory, and ``pytest_terminal_summary`` prints them as a table in the normal pytest output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from reliability_processes import HttpGatewayProcess
from reliability_support import FIGURES, Figures, dump_json

from isokron.substrate.dsn import SubstrateDSNs

FIGURES_FILE = "reliability-figures.json"
_json_path: list[Path] = []


@pytest.fixture(scope="session")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Figures]:
    """The run's figure collector; its JSON file is written when the session ends."""
    path = tmp_path_factory.getbasetemp() / FIGURES_FILE
    _json_path[:] = [path]
    yield FIGURES
    dump_json(path, FIGURES.to_json())


@pytest.fixture(scope="module")
async def http_gateway(
    substrate: SubstrateDSNs, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HttpGatewayProcess]:
    """A long-lived HTTP gateway on the session substrate (governance cache off)."""
    gateway = HttpGatewayProcess(substrate, tmp_path_factory.mktemp("gw") / "gateway.log")
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES.values:
        return
    terminalreporter.write_sep("=", "IsoKron reliability figures")
    for line in FIGURES.table_lines():
        terminalreporter.write_line(line)
    if _json_path:
        terminalreporter.write_line(f"figures written to {_json_path[0]}")
