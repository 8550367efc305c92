"""The database every benchmark runs against: a fresh, migrated database per run.

By default the embedded PostgreSQL (``isokron.substrate.embedded.start_embedded``) is started in
a temporary data directory and stopped afterwards; with ``--dsn`` an existing server is used
(an admin DSN, e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``). Either way the run
creates ``isokron_bench_<hex>``, migrates it with ``isokron.substrate.migrate.upgrade`` and
drops it at the end.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import psycopg

from isokron.governance.seeds import default_seed
from isokron.substrate import writes
from isokron.substrate.dsn import SubstrateDSNs, with_database
from isokron.substrate.embedded import start_embedded, stop_embedded
from isokron.substrate.migrate import upgrade

# Benchmarks write far faster than an agent may: the workspaces they create lift the gateway's
# rate limits so that the policy refuses nothing (the policy check itself still runs).
UNLIMITED_POLICIES: dict[str, Any] = {
    "policy.kora_rate_limit_per_minute": 1_000_000_000,
    "policy.kora_rate_limit_burst": 1_000_000_000,
    "policy.kora_max_nodes_per_minute": 1_000_000_000,
    "policy.kora_max_links_per_minute": 1_000_000_000,
    "policy.kora_max_proposals_per_24h": 1_000_000_000,
    "policy.kora_max_open_escalations": 1_000_000_000,
}


@dataclass(frozen=True)
class BenchDatabase:
    """A migrated database for one benchmark run."""

    server_dsn: str  # admin DSN of the maintenance database
    dsns: SubstrateDSNs  # admin / reader / gateway DSNs of the bench database
    name: str
    server_version: str
    embedded: bool
    data_dir: Path | None = None


@dataclass
class BenchWorkspace:
    """A seeded workspace with a Kora service token and lifted rate limits."""

    workspace_id: str
    tenant_id: UUID
    operator_id: UUID
    kora_id: UUID
    token: str
    actors: dict[str, UUID] = field(default_factory=dict)


def _server_version(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


@contextmanager
def _migrated_database(
    server_dsn: str, *, embedded: bool, data_dir: Path | None
) -> Iterator[BenchDatabase]:
    """Create and migrate ``isokron_bench_<hex>`` on the server; drop it afterwards."""
    name = "isokron_bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # generated name, never user input
    try:
        admin = with_database(server_dsn, name)
        upgrade(admin)
        yield BenchDatabase(
            server_dsn=server_dsn,
            dsns=SubstrateDSNs.derive(admin),
            name=name,
            server_version=_server_version(server_dsn),
            embedded=embedded,
            data_dir=data_dir,
        )
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def bench_database(admin_dsn: str | None = None) -> Iterator[BenchDatabase]:
    """Start (or attach to) a server, create and migrate a fresh database; drop it after."""
    tmp: Path | None = None
    if admin_dsn is None:
        tmp = Path(tempfile.mkdtemp(prefix="isokron-bench-pg-"))
        server_dsn = start_embedded(tmp / "pgdata", database="postgres")
    else:
        server_dsn = admin_dsn
    try:
        with _migrated_database(server_dsn, embedded=admin_dsn is None, data_dir=tmp) as db:
            yield db
    finally:
        if tmp is not None:
            stop_embedded(tmp / "pgdata")
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def sibling_database(db: BenchDatabase) -> Iterator[BenchDatabase]:
    """Another fresh, migrated database on the same server as ``db`` (dropped afterwards)."""
    with _migrated_database(db.server_dsn, embedded=db.embedded, data_dir=db.data_dir) as other:
        yield other


async def create_bench_workspace(admin: asyncpg.Connection, prefix: str) -> BenchWorkspace:
    """Create a seeded workspace, lift its rate limits and issue a token for Kora."""
    workspace_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    created = await writes.create_workspace(
        admin, workspace_id, f"bench {prefix}", seed=default_seed()
    )
    operator = created.operator_actor_id
    await writes.govern(
        admin,
        "set_policies",
        workspace_id,
        operator,
        {"policies": [{"policy_key": k, "policy_value": v} for k, v in UNLIMITED_POLICIES.items()]},
    )
    kora = created.actors["kora"]
    issued = await writes.issue_token(admin, workspace_id, operator, kora, label="bench")
    return BenchWorkspace(
        workspace_id=workspace_id,
        tenant_id=created.tenant_id,
        operator_id=operator,
        kora_id=kora,
        token=issued.token,
        actors=dict(created.actors),
    )
