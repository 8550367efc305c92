"""Substrate tests: prints the state-tamper figures the matrix test collects."""

from __future__ import annotations

from typing import Any

from substrate_support import STATE_TAMPER_FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STATE_TAMPER_FIGURES:
        return
    terminalreporter.write_sep("=", "IsoKron state tamper figures (superuser edits of rows)")
    width = max(len(k) for k in STATE_TAMPER_FIGURES)
    for key, value in STATE_TAMPER_FIGURES.items():
        terminalreporter.write_line(f"{key.ljust(width)}  {value}")
