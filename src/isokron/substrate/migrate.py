"""Apply the substrate's versioned SQL migrations with yoyo-migrations.

Each migration is applied in one transaction together with yoyo's record of it, so a failure
leaves nothing behind. Two processes may start at once: a PostgreSQL advisory lock serializes
them, and under that lock any stale yoyo lock row (left by a killed process) is safe to clear.
On a Citus coordinator the roles are first made on every node (:mod:`isokron.substrate.citus`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations

from isokron.errors import MigrationError, SubstrateUnavailableError
from isokron.substrate.citus import citus_version, prepare_roles
from isokron.substrate.dsn import redact_dsn, validate_dsn

log = logging.getLogger("isokron.substrate.migrate")

# An arbitrary constant shared by every IsoKron process: "IsoKron" in ASCII, as one bigint.
MIGRATION_LOCK_KEY = 0x49736F4B726F6E
ACQUIRE_LOCK_SQL = "SELECT pg_advisory_lock(%s)"
RELEASE_LOCK_SQL = "SELECT pg_advisory_unlock(%s)"


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What ``upgrade`` did."""

    applied: tuple[str, ...]
    already_applied: tuple[str, ...]


def migrations_dir() -> Path:
    """The folder holding the packaged ``NNNN.name.sql`` migrations."""
    return Path(str(resources.files("isokron.substrate") / "migrations"))


def _yoyo_uri(dsn: str) -> str:
    scheme, rest = validate_dsn(dsn).split("://", 1)
    return "postgresql+psycopg://" + rest


def upgrade(dsn: str, *, progress: Callable[[str], None] | None = None) -> MigrationResult:
    """Apply every pending migration to the database at ``dsn`` (admin). Re-running is a no-op."""
    migrations = read_migrations(str(migrations_dir()))
    try:
        lock_conn = psycopg.connect(validate_dsn(dsn), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise SubstrateUnavailableError(
            f"cannot reach PostgreSQL at {redact_dsn(dsn)}: {exc}"
        ) from exc
    with lock_conn:
        lock_conn.execute(ACQUIRE_LOCK_SQL, (MIGRATION_LOCK_KEY,))
        try:
            if citus_version(lock_conn) is not None:
                # Roles must be committed on every node before 0001 runs (see citus.py).
                prepare_roles(lock_conn)
            backend = get_backend(_yoyo_uri(dsn))
            backend.break_lock()  # safe: we hold the advisory lock, so any row is stale
            pending = backend.to_apply(migrations)
            done = tuple(m.id for m in migrations if m.id not in {p.id for p in pending})
            applied: list[str] = []
            with backend.lock():
                for migration in pending:
                    if progress:
                        progress(migration.id)
                    log.info("[isokron.migrate] applying %s", migration.id)
                    try:
                        backend.apply_migrations(backend.to_apply(type(migrations)([migration])))
                    except psycopg.Error as exc:
                        raise MigrationError(
                            f"migration {migration.id} failed and was rolled back: {exc}"
                        ) from exc
                    applied.append(migration.id)
            backend.connection.close()
            return MigrationResult(applied=tuple(applied), already_applied=done)
        finally:
            lock_conn.execute(RELEASE_LOCK_SQL, (MIGRATION_LOCK_KEY,))
