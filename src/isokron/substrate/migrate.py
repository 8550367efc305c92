"""Apply the substrate's versioned SQL migrations with yoyo-migrations.

Each migration is applied in one transaction together with yoyo's record of it, so a failure
leaves nothing behind. Two processes may start at once: a PostgreSQL advisory lock serializes
them, and under that lock any stale yoyo lock row (left by a killed process) is safe to clear.

The migration files spell the roles ``isokron_owner``, ``isokron_reader`` and
``isokron_gateway``. Roles are cluster-wide, so each database gets its own: before applying, the
files are copied with those names replaced by the database's (``dsn.database_roles``); migration
0010 moves what an earlier release gave the shared names to them. On a Citus coordinator the
roles are first made on every node (:mod:`isokron.substrate.citus`).
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations

from isokron.errors import MigrationError
from isokron.substrate.citus import citus_version, prepare_roles
from isokron.substrate.database_errors import translate_connect_error
from isokron.substrate.dsn import (
    DatabaseRoles,
    database_name,
    database_roles,
    validate_dsn,
)

log = logging.getLogger("isokron.substrate.migrate")

# An arbitrary constant shared by every IsoKron process: "IsoKron" in ASCII, as one bigint.
MIGRATION_LOCK_KEY = 0x49736F4B726F6E
ACQUIRE_LOCK_SQL = "SELECT pg_advisory_lock(%s)"
RELEASE_LOCK_SQL = "SELECT pg_advisory_unlock(%s)"
SPELLED_ROLE = re.compile(r"\bisokron_(?:owner|reader|gateway)\b")


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


def write_role_substituted(target: Path, roles: DatabaseRoles) -> None:
    """Copy the packaged migrations into ``target`` with the spelled role names replaced."""
    names = roles.as_substitutions()
    for source in sorted(migrations_dir().glob("*.sql")):
        text = source.read_text(encoding="utf-8")
        (target / source.name).write_text(
            SPELLED_ROLE.sub(lambda m: names[m.group(0)], text), encoding="utf-8"
        )


def upgrade(
    dsn: str,
    *,
    progress: Callable[[str], None] | None = None,
    until: str | None = None,
    roles: DatabaseRoles | None = None,
) -> MigrationResult:
    """Apply every pending migration to the database at ``dsn`` (admin). Re-running is a no-op.

    ``until`` (a migration id such as ``0009.append-and-read-paths``) stops after that one, and
    ``roles`` overrides the database's role names: how the upgrade tests build a database of an
    earlier release (which used the cluster-wide names).
    """
    roles = roles or database_roles(database_name(dsn))
    with tempfile.TemporaryDirectory(prefix="isokron-migrations-") as folder:
        write_role_substituted(Path(folder), roles)
        return _upgrade(dsn, Path(folder), roles, progress=progress, until=until)


def _upgrade(
    dsn: str,
    folder: Path,
    roles: DatabaseRoles,
    *,
    progress: Callable[[str], None] | None,
    until: str | None,
) -> MigrationResult:
    migrations = read_migrations(str(folder))
    if until is not None:
        ids = [m.id for m in migrations]
        if until not in ids:
            raise MigrationError(f"no migration {until!r}; the packaged ones are {ids}")
        migrations = type(migrations)(migrations[: ids.index(until) + 1])
    try:
        lock_conn = psycopg.connect(validate_dsn(dsn), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise translate_connect_error(exc, dsn) from exc
    with lock_conn:
        lock_conn.execute(ACQUIRE_LOCK_SQL, (MIGRATION_LOCK_KEY,))
        try:
            if citus_version(lock_conn) is not None:
                # Roles must be committed on every node before 0001 runs (see citus.py).
                prepare_roles(lock_conn, roles)
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
