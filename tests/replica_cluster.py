"""A primary and a streaming replica made with PostgreSQL's own tools, for the replica tests.

Both servers run from the binaries of the embedded server (the ``pgserver`` wheel: the same
``initdb``, ``pg_ctl`` and ``pg_basebackup``), listen on Unix sockets in their own temporary
directories only, and are stopped by :meth:`PrimaryAndReplica.stop`. The replica is a hot
standby made with ``pg_basebackup -R -X stream``; it streams WAL from the primary.

Run as root (containers), the servers run as the ``pgserver`` system user, as the embedded
server does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pgserver._commands import POSTGRES_BIN_PATH
from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

SYSTEM_USER = "pgserver"
REPLICA_NAME = "isokron_replica"
PORT = 5432  # Unix sockets only: the port just names the socket file in each server's directory
CATCH_UP_SECONDS = 60.0


def _as_server_user() -> dict[str, str]:
    return {"user": SYSTEM_USER} if os.geteuid() == 0 else {}


def _bin(name: str) -> str:
    return str(POSTGRES_BIN_PATH / name)


def _run(*args: str) -> str:
    done = subprocess.run(
        args, check=True, capture_output=True, text=True, timeout=120, **_as_server_user()
    )
    return done.stdout


def _socket_dir(data_dir: Path) -> Path:
    # Outside the data directory, so pg_basebackup does not copy the primary's socket lock.
    return data_dir.with_name(data_dir.name + "-socket")


def _dsn(socket_dir: Path, database: str = "postgres") -> str:
    return f"postgresql://postgres@/{database}?host={socket_dir}&port={PORT}"


@dataclass
class PrimaryAndReplica:
    """A running primary and hot-standby replica; ``*_dsn`` name their maintenance database."""

    root: Path
    primary_dir: Path
    replica_dir: Path

    @property
    def primary_dsn(self) -> str:
        return _dsn(_socket_dir(self.primary_dir))

    @property
    def replica_dsn(self) -> str:
        return _dsn(_socket_dir(self.replica_dir))

    @classmethod
    def start(cls) -> PrimaryAndReplica:
        """initdb a primary, start it, pg_basebackup a replica from it and start that."""
        root = Path(tempfile.mkdtemp(prefix="ikrep-"))
        if os.geteuid() == 0:
            ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(root)
            ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
            shutil.chown(root, SYSTEM_USER, SYSTEM_USER)
        pair = cls(root=root, primary_dir=root / "primary", replica_dir=root / "replica")
        for data_dir in (pair.primary_dir, pair.replica_dir):
            _socket_dir(data_dir).mkdir()
            if os.geteuid() == 0:
                shutil.chown(_socket_dir(data_dir), SYSTEM_USER, SYSTEM_USER)
        _run(
            _bin("initdb"),
            "-D",
            str(pair.primary_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=utf8",
        )
        with open(pair.primary_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("wal_level = replica\nmax_wal_senders = 5\nfsync = off\n")
        pair._pg_ctl(pair.primary_dir, "start")
        _run(
            _bin("pg_basebackup"),
            "-D",
            str(pair.replica_dir),
            "-h",
            str(_socket_dir(pair.primary_dir)),
            "-p",
            str(PORT),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
        )
        with open(pair.replica_dir / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"primary_conninfo = 'host={_socket_dir(pair.primary_dir)} port={PORT} "
                f"user=postgres application_name={REPLICA_NAME}'\nhot_standby = on\n"
            )
        pair._pg_ctl(pair.replica_dir, "start")
        return pair

    def _pg_ctl(self, data_dir: Path, action: str) -> None:
        _run(
            _bin("pg_ctl"),
            "-D",
            str(data_dir),
            "-w",
            "-l",
            str(data_dir / "log"),
            "-o",
            f'-h "" -k {_socket_dir(data_dir)} -p {PORT}',
            action,
        )

    def stop(self) -> None:
        for data_dir in (self.replica_dir, self.primary_dir):
            if (data_dir / "postmaster.pid").exists():
                _run(_bin("pg_ctl"), "-D", str(data_dir), "-w", "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_caught_up(self) -> None:
        """Block until the replica has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary_dsn, autocommit=True) as primary:
            target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        with psycopg.connect(self.replica_dsn, autocommit=True) as replica:
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while True:
                row = replica.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
                if row and row[0]:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"the replica did not replay up to {target}")
                time.sleep(0.05)

    def pause_replay(self, paused: bool) -> None:
        """Pause (or resume) WAL replay on the replica: it keeps receiving but stops applying."""
        fn = "pg_wal_replay_pause" if paused else "pg_wal_replay_resume"
        with psycopg.connect(self.replica_dsn, autocommit=True) as replica:
            replica.execute(f"SELECT {fn}()")

    def wait_for_sync_rep_wait(self) -> None:
        """Block until some backend of the primary waits for the replica to confirm a commit."""
        with psycopg.connect(self.primary_dsn, autocommit=True) as primary:
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while not primary.execute(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            ).fetchone()[0]:  # type: ignore[index]
                if time.monotonic() > deadline:
                    raise AssertionError("no commit waited for the synchronous replica")
                time.sleep(0.05)

    def set_synchronous(self, remote_apply: bool) -> None:
        """Make the primary wait until the replica has *applied* each commit (or stop waiting)."""
        names = REPLICA_NAME if remote_apply else ""
        level = "remote_apply" if remote_apply else "on"
        with psycopg.connect(self.primary_dsn, autocommit=True) as primary:
            primary.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            primary.execute(f"ALTER SYSTEM SET synchronous_commit = '{level}'")
            primary.execute("SELECT pg_reload_conf()")
