"""Shared fixtures: a real PostgreSQL for every test that needs one.

By default the tests start the embedded PostgreSQL 16 (pgserver) in a temporary directory.
With ``ISOKRON_TEST_DSN`` set (an admin DSN, e.g. postgresql://postgres@127.0.0.1:5432/postgres)
they use that server instead. Either way each test session works in a fresh database that is
dropped at the end. Tests never skip because no server was found: they fail.

With ``ISOKRON_TEST_CITUS_WORKERS`` also set (``host:port,host:port``) the server is a Citus
coordinator: every test database is made on the coordinator and the workers with the citus
extension, the workers are added, and the shared substrate is distributed with
``isokron db distribute`` after migrating (docs/scaling.md) — the suite then runs on the cluster.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psycopg
import pytest

from citus_support import citus_workers, on_node
from isokron.governance.seeds import default_seed
from isokron.substrate import citus, connection, writes
from isokron.substrate.dsn import (
    DatabaseRoles,
    SubstrateDSNs,
    database_name,
    database_roles,
    with_database,
)
from isokron.substrate.embedded import start_embedded, stop_embedded
from isokron.substrate.migrate import upgrade

TEST_DSN_ENV = "ISOKRON_TEST_DSN"


def _make_citus_database(server_dsn: str, name: str) -> None:
    """Create ``name`` on every worker with the extension, then make the coordinator's a cluster."""
    for host, port in citus_workers():
        with psycopg.connect(on_node(server_dsn, host, port), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(
            with_database(on_node(server_dsn, host, port), name), autocommit=True
        ) as conn:
            conn.execute("CREATE EXTENSION citus")
    coordinator = urlsplit(server_dsn)
    with psycopg.connect(with_database(server_dsn, name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION citus")
        conn.execute(
            "SELECT citus_set_coordinator_host(%s, %s)",
            (coordinator.hostname, coordinator.port or 5432),
        )
        for host, port in citus_workers():
            conn.execute("SELECT citus_add_node(%s, %s)", (host, port))


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """Admin DSN of the server under test (maintenance database)."""
    given = os.environ.get(TEST_DSN_ENV)
    if given:
        yield given
        return
    data_dir = Path(tempfile.mkdtemp(prefix="isokron-test-pg-")) / "pgdata"
    dsn = start_embedded(data_dir, database="postgres")
    try:
        yield dsn
    finally:
        stop_embedded(data_dir)


def _create_database(server_dsn: str, name: str) -> str:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is generated below, never user input
    if citus_workers():
        _make_citus_database(server_dsn, name)
    return with_database(server_dsn, name)


def _drop_database(server_dsn: str, name: str) -> None:
    roles = database_roles(name)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for host, port in citus_workers():
        with psycopg.connect(on_node(server_dsn, host, port), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        # The database's own roles (cluster-wide objects) go with it; names are derived, not input.
        for role in (roles.reader, roles.gateway, roles.owner):
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture(scope="session")
def fresh_database(pg_server_dsn: str) -> Iterator[Callable[[], str]]:
    """Factory: a new, empty database on the server under test (dropped at session end)."""
    made: list[str] = []

    def make() -> str:
        name = "isokron_test_" + uuid.uuid4().hex[:12]
        made.append(name)
        return _create_database(pg_server_dsn, name)

    yield make
    for name in made:
        _drop_database(pg_server_dsn, name)


@pytest.fixture(scope="session")
def substrate(fresh_database: Callable[[], str]) -> SubstrateDSNs:
    """A migrated substrate shared by the session: its admin, reader and gateway DSNs."""
    admin = fresh_database()
    upgrade(admin)
    if citus_workers():
        citus.distribute(admin)
    return SubstrateDSNs.derive(admin)


@pytest.fixture(scope="session")
def roles(substrate: SubstrateDSNs) -> DatabaseRoles:
    """The session substrate's own owner, reader and gateway role names."""
    return database_roles(database_name(substrate.admin))


@pytest.fixture(scope="session")
async def admin_pool(substrate: SubstrateDSNs) -> AsyncIterator[asyncpg.Pool]:
    pool = await connection.create_pool(substrate.admin, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def reader_pool(substrate: SubstrateDSNs) -> AsyncIterator[asyncpg.Pool]:
    pool = await connection.create_pool(substrate.reader, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture
async def make_workspace(admin_pool: asyncpg.Pool) -> Callable:
    """Factory: a freshly created and seeded workspace with a unique id."""

    async def make(prefix: str = "ws") -> writes.CreatedWorkspace:
        ws_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
        async with admin_pool.acquire() as conn:
            return await writes.create_workspace(conn, ws_id, f"Test {ws_id}", seed=default_seed())

    return make


@pytest.fixture
async def workspace(make_workspace: Callable) -> writes.CreatedWorkspace:
    """One freshly created and seeded workspace."""
    return await make_workspace()


class PrivatePostgres:
    """An embedded PostgreSQL started by the test itself, so that the test may stop it, freeze
    it (SIGSTOP) and start it again: never the shared server other tests (and other people) use.
    ``dsns`` are a migrated substrate's admin, reader and gateway DSNs."""

    def __init__(self, base: Path) -> None:
        self.pgdata = base / "pgdata"
        server = start_embedded(self.pgdata, database="postgres")
        self.dsns = _migrated_substrate(server)

    @property
    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])

    def _processes(self) -> list:
        import psutil

        main = psutil.Process(self.postmaster_pid)
        return [main, *main.children(recursive=True)]

    def freeze(self) -> None:
        """SIGSTOP the server and every backend: connections stay open, nothing answers."""
        import signal

        for process in self._processes():
            process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        import signal

        for process in self._processes():
            process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        assert stop_embedded(self.pgdata)

    def start(self) -> None:
        start_embedded(self.pgdata, database="postgres")

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):
            self.thaw()
        with contextlib.suppress(Exception):
            stop_embedded(self.pgdata)


def _migrated_substrate(server_dsn: str) -> SubstrateDSNs:
    admin = _create_database(server_dsn, "isokron_private")
    upgrade(admin)
    return SubstrateDSNs.derive(admin)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A module's own embedded PostgreSQL (see :class:`PrivatePostgres`)."""
    server = PrivatePostgres(Path(tempfile.mkdtemp(prefix="ik-priv-")))
    try:
        yield server
    finally:
        server.close()
