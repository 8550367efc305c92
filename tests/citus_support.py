"""Running the test suite on a Citus cluster (``ISOKRON_TEST_CITUS_WORKERS``, see conftest)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

CITUS_WORKERS_ENV = "ISOKRON_TEST_CITUS_WORKERS"


def citus_workers() -> list[tuple[str, int]]:
    """The Citus workers named by ISOKRON_TEST_CITUS_WORKERS (none: plain PostgreSQL)."""
    spec = os.environ.get(CITUS_WORKERS_ENV, "").strip()
    return [(h, int(p)) for h, p in (w.rsplit(":", 1) for w in spec.split(",") if w)]


def on_node(server_dsn: str, host: str, port: int) -> str:
    """``server_dsn`` (a URL) pointed at another node of the cluster, same user and database."""
    parts = urlsplit(server_dsn)
    user = parts.username or "postgres"
    return urlunsplit((parts.scheme, f"{user}@{host}:{port}", parts.path, "", ""))
