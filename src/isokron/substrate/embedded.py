"""The embedded default: a PostgreSQL 16 server from the pip-installed ``pgserver`` wheel.

With no DSN given, IsoKron starts (or reuses) a server whose data lives in the user data
directory, listening only on a Unix socket inside that directory.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs

from isokron.errors import SubstrateUnavailableError
from isokron.substrate.dsn import with_database

log = logging.getLogger("isokron.substrate.embedded")

DEFAULT_DATABASE = "isokron"
DATA_DIR_ENV = "ISOKRON_DATA_DIR"


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
    """Stop the embedded server if it is running; True if one was stopped."""
    pgdata = (data_dir or default_data_dir()).expanduser()
    if not (pgdata / "postmaster.pid").exists():
        return False
    with _quiet_platformdirs():
        server = _get_server(pgdata)
        server.cleanup_mode = "stop"
        server.cleanup()
    return True


@contextmanager
def _quiet_platformdirs() -> Iterator[None]:
    # pgserver asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR is unset
    # (containers, CI); the fallback it then uses is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        yield


def _get_server(pgdata: Path) -> Any:
    import pgserver  # imported lazily: it is only needed for the embedded default

    return pgserver.get_server(pgdata, cleanup_mode=None)


def _plain(name: str) -> str:
    # Database names reach psql as identifiers; refuse anything that would need quoting.
    if not name.replace("_", "").isalnum():
        raise SubstrateUnavailableError(
            f"embedded database name {name!r} must be letters, digits, _"
        )
    return name
