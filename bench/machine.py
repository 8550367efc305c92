"""What the figures were measured on: CPU, memory, PostgreSQL and the other programs involved."""

from __future__ import annotations

import glob
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def postgres_installations() -> list[str]:
    """``postgres --version`` of every server binary found (system packages and pgserver)."""
    found = []
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    try:
        import pgserver

        candidates.append(str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "postgres"))
    except ImportError:
        pass
    for path in candidates:
        if os.path.exists(path):
            found.append(f"{_run([path, '--version'])} ({path})")
    return found


def describe(server_version: str | None = None) -> dict[str, Any]:
    """A JSON-ready description of the machine and the software versions."""
    return {
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres_server_used": server_version,
        "postgres_installed": postgres_installations(),
        "node": _run(["node", "--version"]),
        "packages": {
            name: _version(name)
            for name in ("isokron", "mcp", "asyncpg", "psycopg", "hermes-agent", "pgserver")
        },
    }
