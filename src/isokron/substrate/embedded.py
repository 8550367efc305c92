"""The embedded default: a PostgreSQL 16 server from the pip-installed ``pgserver`` wheel.

With no DSN given, IsoKron starts (or reuses) a server whose data lives in the user data
directory, listening only on a Unix socket inside that directory.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs
import psutil

from isokron.errors import SubstrateUnavailableError
from isokron.substrate.dsn import with_database

log = logging.getLogger("isokron.substrate.embedded")

DEFAULT_DATABASE = "isokron"
DATA_DIR_ENV = "ISOKRON_DATA_DIR"
#: pgserver's list of the processes using a server (it stops the server when it empties).
HANDLE_FILE = ".handle_pids.json"
_STOP_WAIT_SECONDS = 30.0


def default_data_dir() -> Path:
    """Where the embedded server keeps its data (``$ISOKRON_DATA_DIR`` overrides)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("isokron", appauthor=False)) / "pgdata"


def start_embedded(data_dir: Path | None = None, *, database: str = DEFAULT_DATABASE) -> str:
    """Start (or attach to) the embedded server and return an admin DSN for ``database``.

    The server keeps running after this process exits so that later commands (and the gateway)
    reach the same data; ``stop_embedded`` stops it.
    """
    pgdata = (data_dir or default_data_dir()).expanduser()
    if pgdata.exists() and not pgdata.is_dir():
        raise SubstrateUnavailableError(
            f"the data directory {pgdata} is a file, not a directory; give another --data-dir"
        )
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SubstrateUnavailableError(
            f"cannot create the data directory {pgdata}: {exc}"
        ) from None
    with _quiet_platformdirs():
        try:
            server = _get_server(pgdata)
            uri = server.get_uri()
            if database != "postgres":
                exists = server.psql(
                    f"SELECT 1 FROM pg_database WHERE datname = '{_plain(database)}';"
                )
                if "1 row" not in exists:
                    server.psql(f'CREATE DATABASE "{_plain(database)}";')
        except (OSError, RuntimeError, AssertionError) as exc:
            raise SubstrateUnavailableError(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
            ) from exc
    log.info("[isokron.embedded] server ready in %s", pgdata)
    return with_database(uri, database)


def stop_embedded(data_dir: Path | None = None) -> bool:
    """Stop the embedded server if it is running; True only once it has stopped.

    The server is stopped with ``pg_ctl stop -m fast`` whatever the handle file says:
    pgserver counts the processes that use the server in ``.handle_pids.json`` and stops it
    only when the last one leaves, so an ``isokron serve`` killed with SIGTERM or SIGKILL
    (whose PID stays in that file) would otherwise keep it running forever. The file is
    cleared afterwards.

    Raises:
        SubstrateUnavailableError: the server is still running after the stop.
    """
    pgdata = (data_dir or default_data_dir()).expanduser()
    pid = running_postmaster_pid(pgdata)
    if pid is None:
        _clear_handles(pgdata)
        return False
    from pgserver import _commands  # lazily, like pgserver itself

    pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # made at import, per binary

    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_system_user(), timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("[isokron.embedded.stop_failed] pg_ctl stop: %s", exc)
    deadline = time.monotonic() + _STOP_WAIT_SECONDS
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if running_postmaster_pid(pgdata) is not None or _alive(pid):
        raise SubstrateUnavailableError(
            f"the embedded PostgreSQL in {pgdata} (pid {pid}) is still running after "
            "`pg_ctl stop`; see its log in that directory"
        )
    _clear_handles(pgdata)
    log.info("[isokron.embedded] server in %s stopped (pid %d)", pgdata, pid)
    return True


def running_postmaster_pid(pgdata: Path) -> int | None:
    """The PID of the postmaster serving ``pgdata``, if one is running (not just a pid file)."""
    try:
        first = (pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()[0]
        pid = int(first.strip())
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _clear_handles(pgdata: Path) -> None:
    handles = pgdata / HANDLE_FILE
    if handles.exists():
        stale = handles.read_text(encoding="utf-8").strip()
        handles.write_text("[]", encoding="utf-8")
        log.debug("[isokron.embedded] cleared the handle file (was %s)", stale)


def _system_user() -> str | None:
    # pgserver runs PostgreSQL as the user "pgserver" when it is started by root.
    return "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


@contextmanager
def _quiet_platformdirs() -> Iterator[None]:
    # pgserver asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR is unset
    # (containers, CI); the fallback it then uses is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        yield


def _get_server(pgdata: Path) -> Any:
    import pgserver  # imported lazily: it is only needed for the embedded default
    from pgserver.postgres_server import PostgresServer

    # pgserver keeps one handle per data directory per process and hands it out again even
    # after the server was stopped (``isokron down``, a restart): forget a handle whose server
    # is gone, so that this call starts it again.
    cached = PostgresServer._instances.get(pgdata.expanduser().resolve())
    if cached is not None and running_postmaster_pid(pgdata) is None:
        PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)
    return pgserver.get_server(pgdata, cleanup_mode=None)


def _plain(name: str) -> str:
    # Database names reach psql as identifiers; refuse anything that would need quoting.
    if not name.replace("_", "").isalnum():
        raise SubstrateUnavailableError(
            f"embedded database name {name!r} must be letters, digits, _"
        )
    return name
