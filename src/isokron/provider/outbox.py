"""The provider's durable outbox: every write it accepts is on disk before the hook returns.

One SQLite file per Hermes home, ``$HERMES_HOME/isokron/outbox.sqlite3``, in WAL mode with
``synchronous=FULL``: an ``add`` has been fsync'd when it returns, so a write survives the
host exiting, crashing or being killed at any point after the hook accepted it.

Delivery is at-least-once on the wire and exactly-once in the chain: each row keeps the
write's idempotency key, and the gateway answers a repeated key with the first result
(``replayed``) without appending anything. A row leaves the outbox only after the gateway's
verdict: delivered (the row is deleted and counted) or refused (kept as ``refused`` for the
operator, see ``isokron outbox status``). A crash between the gateway's answer and the delete
only means the next delivery is a replay.

Bound and policy: at most :data:`MAX_PENDING` pending writes (and :data:`MAX_PENDING_BYTES`
of arguments). At the bound a *new* write is refused (:class:`OutboxFullError`, logged at
ERROR once per episode); writes already accepted are never dropped. At most
:data:`MAX_REFUSED_KEPT` refused rows are kept (the oldest are pruned).

Several processes may share the file (a Hermes session, ``isokron outbox flush``): SQLite's
locking keeps the rows consistent and :meth:`Outbox.delivery_lock` lets one of them deliver
at a time, in order.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isokron.provider.errors import ProviderError

log = logging.getLogger("isokron.provider.outbox")

OUTBOX_DIR_NAME = "isokron"
OUTBOX_FILE_NAME = "outbox.sqlite3"
#: Pending writes kept at most; a new write beyond it is refused (never an old one dropped).
MAX_PENDING = 10_000
#: Bytes of pending write arguments kept at most (the same policy as ``MAX_PENDING``).
MAX_PENDING_BYTES = 64 * 1024 * 1024
#: Refused writes kept for the operator; older ones are pruned.
MAX_REFUSED_KEPT = 1_000
_BUSY_TIMEOUT_MS = 5_000

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id     TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    tool             TEXT NOT NULL,
    arguments        TEXT NOT NULL,
    what             TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'refused')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    not_before       REAL NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    UNIQUE (workspace_id, idempotency_key)
);
CREATE TABLE IF NOT EXISTS outbox_counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
"""
INSERT_WRITE_SQL = """
INSERT INTO outbox (workspace_id, idempotency_key, tool, arguments, what, created_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (workspace_id, idempotency_key) DO NOTHING
"""
SELECT_PENDING_SQL = """
SELECT id, workspace_id, idempotency_key, tool, arguments, what, attempts, not_before
FROM outbox WHERE status = 'pending' AND workspace_id = ? ORDER BY id LIMIT ?
"""
SELECT_BY_KEY_SQL = "SELECT id FROM outbox WHERE workspace_id = ? AND idempotency_key = ?"
COUNT_PENDING_SQL = (
    "SELECT count(*), coalesce(sum(length(arguments)), 0) FROM outbox WHERE status = 'pending'"
)
COUNT_PENDING_WS_SQL = "SELECT count(*) FROM outbox WHERE status = 'pending' AND workspace_id = ?"
DELETE_WRITE_SQL = "DELETE FROM outbox WHERE id = ?"
MARK_REFUSED_SQL = (
    "UPDATE outbox SET status = 'refused', last_error = ?, attempts = attempts + 1 WHERE id = ?"
)
MARK_ATTEMPT_SQL = (
    "UPDATE outbox SET attempts = attempts + 1, last_error = ?, not_before = ? WHERE id = ?"
)
PRUNE_REFUSED_SQL = """
DELETE FROM outbox WHERE status = 'refused' AND id NOT IN (
    SELECT id FROM outbox WHERE status = 'refused' ORDER BY id DESC LIMIT ?)
"""
BUMP_COUNTER_SQL = """
INSERT INTO outbox_counters (name, value) VALUES (?, 1)
ON CONFLICT (name) DO UPDATE SET value = value + 1
"""
SELECT_COUNTERS_SQL = "SELECT name, value FROM outbox_counters"
SUMMARY_SQL = """
SELECT workspace_id, status, count(*), min(created_at), max(attempts)
FROM outbox GROUP BY workspace_id, status ORDER BY workspace_id, status
"""
SELECT_REFUSED_SQL = """
SELECT id, workspace_id, what, last_error, created_at FROM outbox
WHERE status = 'refused' ORDER BY id DESC LIMIT ?
"""


class OutboxError(ProviderError):
    """The outbox file could not be opened or written (one clear line at the CLI boundary)."""


class OutboxFullError(OutboxError):
    """The outbox is at its bound: the new write was not accepted."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One pending write as stored (``arguments`` carries its ``idempotency_key``)."""

    id: int
    workspace_id: str
    idempotency_key: str
    tool: str
    arguments: dict[str, Any]
    what: str
    attempts: int
    not_before: float


def outbox_path(hermes_home: str | Path) -> Path:
    """Where the outbox of a Hermes home lives."""
    return Path(hermes_home).expanduser() / OUTBOX_DIR_NAME / OUTBOX_FILE_NAME


class Outbox:
    """The durable queue of accepted writes (thread-safe; one SQLite connection per object)."""

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = MAX_PENDING,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.path = path
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._lock = threading.Lock()
        self._full_logged = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is fsync'd before it returns (WAL's default, NORMAL, is not).
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._db.executescript(SCHEMA_SQL)
            os.chmod(path, 0o600)  # arguments may hold what the agent wrote; keep them private
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open the IsoKron outbox at {path}: {exc}") from exc

    # ------------------------------------------------------------------ accepting writes
    def add(self, workspace_id: str, tool: str, arguments: dict[str, Any], what: str) -> int:
        """Store one write durably and return its row id (the existing row's for a key that is
        already waiting).

        Raises:
            OutboxFullError: the outbox is at its bound; the write was not accepted.
            OutboxError: the file could not be written.
        """
        key = str(arguments["idempotency_key"])
        body = json.dumps(arguments, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        with self._locked() as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute(SELECT_BY_KEY_SQL, (workspace_id, key)).fetchone()
                    if row is not None:
                        db.execute("COMMIT")
                        return int(row[0])
                    count, size = db.execute(COUNT_PENDING_SQL).fetchone()
                    if count >= self.max_pending or size + len(body) > self.max_pending_bytes:
                        db.execute("ROLLBACK")
                        self._report_full(count, size)
                        raise OutboxFullError(
                            f"the IsoKron outbox at {self.path} is full ({count} writes, "
                            f"{size} bytes waiting); new writes are refused until the gateway "
                            "takes them (isokron outbox status)"
                        )
                    cur = db.execute(
                        INSERT_WRITE_SQL, (workspace_id, key, tool, body, what, time.time())
                    )
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise OutboxError(
                    f"cannot write to the IsoKron outbox at {self.path}: {exc}"
                ) from exc
        self._full_logged = False
        return int(cur.lastrowid or 0)

    def _report_full(self, count: int, size: int) -> None:
        if not self._full_logged:
            self._full_logged = True
            log.error(
                "[kora.outbox.full] the outbox holds %d writes (%d bytes), its bound "
                "(%d writes, %d bytes): new writes are refused, none already accepted is "
                "dropped; they go out when the gateway answers (isokron outbox flush)",
                count,
                size,
                self.max_pending,
                self.max_pending_bytes,
            )

    # ------------------------------------------------------------------ delivering
    def pending(self, workspace_id: str, limit: int = 50) -> list[OutboxItem]:
        """The oldest pending writes of ``workspace_id``, in the order they were accepted."""
        with self._locked() as db:
            rows = db.execute(SELECT_PENDING_SQL, (workspace_id, limit)).fetchall()
        return [
            OutboxItem(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7]) for r in rows
        ]

    def count(self, workspace_id: str | None = None) -> int:
        """Pending writes (of one workspace, or in all)."""
        with self._locked() as db:
            if workspace_id is None:
                return int(db.execute(COUNT_PENDING_SQL).fetchone()[0])
            return int(db.execute(COUNT_PENDING_WS_SQL, (workspace_id,)).fetchone()[0])

    def delivered(self, item: OutboxItem, *, replayed: bool) -> None:
        """The gateway accepted ``item``: forget it and count it."""
        with self._locked() as db, _transaction(db):
            db.execute(DELETE_WRITE_SQL, (item.id,))
            db.execute(BUMP_COUNTER_SQL, ("delivered",))
            if replayed:
                db.execute(BUMP_COUNTER_SQL, ("replayed",))

    def refused(self, item: OutboxItem, reason: str) -> None:
        """The gateway refused ``item`` (a final verdict): keep it, marked, for the operator."""
        with self._locked() as db, _transaction(db):
            db.execute(MARK_REFUSED_SQL, (reason[:2000], item.id))
            db.execute(BUMP_COUNTER_SQL, ("refused",))
            db.execute(PRUNE_REFUSED_SQL, (MAX_REFUSED_KEPT,))

    def forget(self, item: OutboxItem) -> None:
        """Remove ``item`` without counting it (a model tool call that reported the refusal)."""
        with self._locked() as db, _transaction(db):
            db.execute(DELETE_WRITE_SQL, (item.id,))
            db.execute(BUMP_COUNTER_SQL, ("refused",))

    def retry_later(self, item: OutboxItem, reason: str, *, not_before: float) -> None:
        """Note a failed attempt; ``not_before`` (epoch seconds) holds it back (rate limit)."""
        with self._locked() as db, _transaction(db):
            db.execute(MARK_ATTEMPT_SQL, (reason[:2000], not_before, item.id))

    @contextlib.contextmanager
    def delivery_lock(self, workspace_id: str) -> Iterator[bool]:
        """Across processes, one deliverer of a workspace's writes at a time (so they go out
        in order); yields False if another one holds it."""
        tag = hashlib.sha256(workspace_id.encode("utf-8")).hexdigest()[:16]
        fd = os.open(self.path.with_suffix(f".{tag}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ reporting
    def status(self, *, refused_limit: int = 10) -> dict[str, Any]:
        """Counts per workspace and status, totals delivered/refused, the latest refusals."""
        with self._locked() as db:
            return _status(db, self.path, (self.max_pending, self.max_pending_bytes), refused_limit)

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise OutboxError(f"the IsoKron outbox could not be updated: {exc}") from exc
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def read_status(path: Path, *, refused_limit: int = 10) -> dict[str, Any] | None:
    """What :meth:`Outbox.status` reports about the outbox at ``path``, read without writing
    anything: None when there is no file there (nothing was ever queued).

    For readers that do not deliver (``isokron outbox status``, the console's "Outbox empty"
    gate): the file is opened read-only, so a read never creates the file or its folder, never
    switches its journal mode and never changes its permissions, as opening an :class:`Outbox`
    does.

    Raises:
        OutboxError: the file exists but cannot be read as an outbox.
    """
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot open the IsoKron outbox at {path}: {exc}") from exc
    try:
        return _status(db, path, (MAX_PENDING, MAX_PENDING_BYTES), refused_limit)
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot read the IsoKron outbox at {path}: {exc}") from exc
    finally:
        db.close()


def _status(
    db: sqlite3.Connection, path: Path, bound: tuple[int, int], refused_limit: int
) -> dict[str, Any]:
    """The report of :meth:`Outbox.status` / :func:`read_status`, from one snapshot of ``db``."""
    db.execute("BEGIN")  # deferred: the four reads see one snapshot, nothing is locked for writes
    try:
        groups = db.execute(SUMMARY_SQL).fetchall()
        counters = dict(db.execute(SELECT_COUNTERS_SQL).fetchall())
        refused = db.execute(SELECT_REFUSED_SQL, (refused_limit,)).fetchall()
        size = db.execute(COUNT_PENDING_SQL).fetchone()
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
    now = time.time()
    return {
        "path": str(path),
        "pending": int(size[0]),
        "pending_bytes": int(size[1]),
        "bound": {"writes": bound[0], "bytes": bound[1]},
        "delivered_total": int(counters.get("delivered", 0)),
        "replayed_total": int(counters.get("replayed", 0)),
        "refused_total": int(counters.get("refused", 0)),
        "workspaces": [
            {
                "workspace_id": ws,
                "status": st,
                "writes": int(n),
                "oldest_age_seconds": round(now - oldest, 1),
                "max_attempts": int(attempts),
            }
            for ws, st, n, oldest, attempts in groups
        ],
        "recent_refusals": [
            {"id": i, "workspace_id": ws, "what": what, "reason": why, "at": at}
            for i, ws, what, why, at in refused
        ],
    }
