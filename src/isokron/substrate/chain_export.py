"""The export's lines, made by PostgreSQL and copied to the file as bytes.

``isokron export`` writes bundle version 3 (docs/chain.md §6): per event the hex of its hash
input, the hex of its stored hash and its payload text, tab-separated. PostgreSQL builds
exactly these lines (the hash input as in :mod:`isokron.substrate.chain_scan`), joins those of
about 1,000 consecutive events into one value and sends them with ``COPY … TO STDOUT (FORMAT
binary)``, which changes no byte; the exporter copies the values to the file without turning a
single event into Python objects. The chain may be cut into seq ranges copied at once on
connections sharing one snapshot.

The state lines (JSON, one per live row) are built by PostgreSQL too and sent with COPY's text
format, which doubles each backslash; JSON text holds no raw control characters, so undoing
that doubling gives the line back byte for byte (tested with texts full of escapes).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO
from uuid import UUID

import psycopg
from psycopg import sql

from isokron.chain import DIGEST_SIZE, HASH_PREFIX
from isokron.chain.state import STATE_TABLES, StateTable
from isokron.errors import ChainError
from isokron.substrate.chain_scan import snapshot_workers

log = logging.getLogger("isokron.substrate.chain_export")

# An event the version-3 line cannot carry: a hash or digest that is not 32 bytes, or an
# occurred_at without a microsecond value. The export refuses; `isokron verify` names it.
# The chain's seq bounds and length, and the first event that cannot be exported: one scan.
SELECT_SEQ_BOUNDS_SQL = """
SELECT min(seq), max(seq), count(*),
       min(seq) FILTER (WHERE octet_length(payload_digest) <> 32
                        OR octet_length(prev_event_hash) <> 32
                        OR octet_length(this_event_hash) <> 32 OR NOT isfinite(occurred_at))
FROM hivex_foundation.event_log
WHERE workspace_id = %(workspace)s AND tenant_id = %(tenant)s
"""
# One event's version-3 line (hash input as in chain_scan, nested to the right), over alias e.
_EVENT_LINE_SQL = """
encode(%(prefix)s::bytea || (e.prev_event_hash
    || (uuid_send(e.tenant_id) || (int8send(e.seq)
    || (uuid_send(e.event_id) || (uuid_send(e.actor_id)
    || (int8send((extract(epoch FROM e.occurred_at) * 1000000)::bigint)
    || (int4send(octet_length(convert_to(e.event_type, 'UTF8')))
    || (convert_to(e.event_type, 'UTF8') || e.payload_digest)))))))), 'hex')
|| E'\\t' || encode(e.this_event_hash, 'hex') || E'\\t'
|| CASE WHEN e.payload_erased THEN '' ELSE e.payload::text END || E'\\n'
"""
# Each COPY row is the lines of up to %(group)s consecutive events, aggregated by the server,
# in COPY's binary format: no escaping, and Python handles one row per ~1,000 events instead
# of one per event (measured: half the export's Python time, and less server time).
# For a range whose every seq is present, each group is read through the primary key in seq
# order and the groups come in generate_series order, so nothing is sorted (_BinaryRows checks
# the order); a GROUP BY over the range sorts the ~800-byte lines first, and an ORDER BY of the
# groups the ~800 kB aggregates, both on disk at the default work_mem (measured: 0.37-0.46 s
# per 100 k events against 0.50-0.64 s for the GROUP BY form, on one connection).
EXPORT_CONTIGUOUS_COPY_SQL = (
    """
COPY (
    SELECT (SELECT string_agg("""
    + _EVENT_LINE_SQL
    + """, '' ORDER BY e.seq)
            FROM hivex_foundation.event_log e
            WHERE e.workspace_id = %(workspace)s AND e.tenant_id = %(tenant)s
              AND e.seq >= g.lo AND e.seq < least(g.lo + %(group)s, %(hi)s))
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1, %(group)s::bigint) AS g(lo)
) TO STDOUT (FORMAT binary)
"""
)
# Any range (seqs with gaps, which only a damaged chain has): groups of seq / %(group)s.
EXPORT_EVENTS_COPY_SQL = (
    """
COPY (
    SELECT string_agg(l.line, '' ORDER BY l.seq) FROM (
        SELECT e.seq, (e.seq - %(lo)s) / %(group)s AS g, """
    + _EVENT_LINE_SQL
    + """ AS line
        FROM hivex_foundation.event_log e
        WHERE e.workspace_id = %(workspace)s AND e.tenant_id = %(tenant)s
          AND e.seq >= %(lo)s AND e.seq < %(hi)s
    ) l
    GROUP BY l.g ORDER BY l.g
) TO STDOUT (FORMAT binary)
"""
)
EVENTS_PER_ROW = 1000
_LARGEST_GROUPED_SEQ = 1 << 62
_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"

# Rows (libpq hands COPY output over one row at a time) joined into one write.
COPY_BATCH = 4096
# Events below which a range is not worth a connection of its own.
MIN_RANGE = 20_000
# Hex digits of the seq inside a line's hash input (bytes 65..72 of §4).
_SEQ_HEX = slice(2 * 65, 2 * 73)


def _seq_of(line: bytes) -> int:
    """The seq of a version-3 event line (from its hash input)."""
    return int.from_bytes(bytes.fromhex(line[_SEQ_HEX].decode("ascii")), "big", signed=True)


def _head(line: bytes) -> tuple[int, bytes]:
    """(seq, this_event_hash) of one version-3 event line."""
    _, hex_hash, _ = line.split(b"\t", 2)
    return _seq_of(line), bytes.fromhex(hex_hash.decode("ascii"))


class _LineCopier:
    """Copies COPY output (one block per row from libpq) to a file in large writes, undoing the
    doubled backslashes; counts the lines and keeps the last one."""

    __slots__ = ("blocks", "count", "last", "out", "tail")

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.blocks: list[bytes | bytearray | memoryview] = []
        self.count = 0
        self.last = b""
        self.tail = b""

    def add(self, block: bytes | bytearray | memoryview) -> bool:
        """Take one block; True when a batch was written (a moment to report progress)."""
        self.blocks.append(block)
        if len(self.blocks) < COPY_BATCH:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        data = self.tail + b"".join(self.blocks)
        self.blocks.clear()
        cut = data.rfind(b"\n") + 1
        lines, self.tail = data[:cut], data[cut:]
        if not lines:
            return
        # A row never spans a cut, so every doubled backslash is whole here.
        self.out.write(lines.replace(b"\\\\", b"\\") if b"\\" in lines else lines)
        self.count += lines.count(b"\n")
        self.last = lines[lines.rfind(b"\n", 0, len(lines) - 1) + 1 :]

    def finish(self) -> int:
        self.flush()
        if self.tail:
            raise ChainError("the database's COPY output ended inside a line")
        return self.count


class _BinaryRows:
    """Parses COPY's binary format (one text column) into ``out``: the rows' bytes as they are.

    Each row's first event must come after the previous row's last: the contiguous form's
    groups come out in generate_series order (a function scan's), not by an ORDER BY (which
    sorted the ~800 kB rows on disk); should that ever change, the export fails here instead of
    writing lines out of order."""

    __slots__ = ("buf", "count", "header_done", "last", "last_seq", "out")

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.buf = b""
        self.header_done = False
        self.count = 0
        self.last = b""
        self.last_seq: int | None = None

    def add(self, block: bytes | bytearray | memoryview) -> None:
        buf = self.buf + bytes(block) if self.buf else bytes(block)
        pos = 0
        if not self.header_done:
            if len(buf) < 19:
                self.buf = buf
                return
            if buf[:11] != _BINARY_SIGNATURE:
                raise ChainError("the database's COPY output is not in the binary format")
            pos = 19 + int.from_bytes(buf[15:19], "big")
            self.header_done = True
        while len(buf) - pos >= 2:
            fields = int.from_bytes(buf[pos : pos + 2], "big", signed=True)
            if fields == -1:  # the trailer
                pos += 2
                break
            if len(buf) - pos < 6:
                break
            size = int.from_bytes(buf[pos + 2 : pos + 6], "big", signed=True)
            if len(buf) - pos - 6 < max(size, 0):
                break
            if size > 0:
                self._row(buf, pos + 6, pos + 6 + size)
            pos += 6 + max(size, 0)
        self.buf = buf[pos:]

    def _row(self, buf: bytes, start: int, end: int) -> None:
        first = _seq_of(buf[start : start + _SEQ_HEX.stop])
        if self.last_seq is not None and first <= self.last_seq:
            raise ChainError(
                f"the database sent the events from seq {first} after seq {self.last_seq}: "
                "out of order, nothing was exported"
            )
        self.out.write(memoryview(buf)[start:end])
        self.count += buf.count(b"\n", start, end)
        self.last = buf[max(start, buf.rfind(b"\n", start, end - 1) + 1) : end]
        self.last_seq = _seq_of(self.last)

    def finish(self) -> int:
        if self.buf:
            raise ChainError("the database's COPY output ended inside a row")
        return self.count


def _copy_range(
    conn: psycopg.Connection,
    params: dict[str, object],
    out: IO[bytes],
    progress: Callable[[int], None] | None,
) -> tuple[int, bytes]:
    """COPY one seq range's event lines to ``out``; (count, last line)."""
    rows = _BinaryRows(out)
    statement = EXPORT_CONTIGUOUS_COPY_SQL if params["contiguous"] else EXPORT_EVENTS_COPY_SQL
    with conn.cursor().copy(statement, params) as copy:
        for block in copy:
            rows.add(block)
            if progress is not None:
                progress(rows.count)
    return rows.finish(), rows.last


def copy_event_lines(
    conn: psycopg.Connection,
    tenant: UUID,
    workspace_id: str,
    spool: IO[bytes],
    *,
    progress: Callable[[int], None] | None = None,
    parallel: tuple[str, int] | None = None,
) -> tuple[int, int | None, bytes | None]:
    """Write the tenant's version-3 event lines to ``spool``; return (count, head_seq,
    head_hash). Raises ChainError (nothing written that matters: the caller's spool is
    discarded) when an event cannot be exported. With ``parallel`` = (dsn, n) the chain is
    cut into n seq ranges copied at once on connections sharing ``conn``'s snapshot (``conn``
    in a REPEATABLE READ transaction), the later ranges through temporary files."""
    params: dict[str, object] = {"workspace": workspace_id, "tenant": tenant}
    bounds = conn.execute(SELECT_SEQ_BOUNDS_SQL, params).fetchone()
    if bounds is None or bounds[0] is None:
        return 0, None, None
    if bounds[3] is not None:
        raise ChainError(
            f"event seq {bounds[3]}: a hash or digest is not {DIGEST_SIZE} bytes, or its "
            "occurred_at is not a finite time — the event was damaged; `isokron verify` names it"
        )
    first, last = int(bounds[0]), int(bounds[1])
    # Every seq present (the generate_series form reads each group by the key); far from the
    # largest bigint, so that a group's upper bound cannot overflow.
    contiguous = last - first + 1 == int(bounds[2]) and last < _LARGEST_GROUPED_SEQ
    ways = 1 if parallel is None else max(1, min(parallel[1], (last - first) // MIN_RANGE))
    step = (last - first) // ways + 1
    ranges = [
        {
            **params,
            "prefix": HASH_PREFIX,
            "group": EVENTS_PER_ROW,
            "contiguous": contiguous,
            "lo": first + i * step,
            "hi": first + (i + 1) * step,
        }
        for i in range(ways)
    ]
    ranges[-1]["hi"] = last + 1
    if ways == 1:
        count, tail_line = _copy_range(conn, ranges[0], spool, progress)
    else:
        assert parallel is not None
        count, tail_line = _copy_parallel(conn, parallel[0], ranges, spool, progress)
    seq, head_hash = _head(tail_line)
    log.info("[isokron.export.copy] tenant=%s events=%d head_seq=%d", tenant, count, seq)
    return count, seq, head_hash


def _copy_parallel(
    conn: psycopg.Connection,
    dsn: str,
    ranges: list[dict[str, object]],
    spool: IO[bytes],
    progress: Callable[[int], None] | None,
) -> tuple[int, bytes]:
    """Copy each range on its own connection at once; append them to ``spool`` in order."""
    workers = snapshot_workers(conn, dsn, str(ranges[0]["workspace"]), len(ranges) - 1)
    lock, done = threading.Lock(), [0] * len(ranges)

    def report(index: int) -> Callable[[int], None]:
        def seen(n: int) -> None:
            with lock:
                done[index] = n
                if progress is not None:
                    progress(sum(done))

        return seen

    files = [spool] + [tempfile.TemporaryFile() for _ in ranges[1:]]
    try:
        with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
            results = list(
                pool.map(
                    lambda i: _copy_range([conn, *workers][i], ranges[i], files[i], report(i)),
                    range(len(ranges)),
                )
            )
        for extra in files[1:]:
            extra.seek(0)
            shutil.copyfileobj(extra, spool, 1 << 20)
    finally:
        for extra in files[1:]:
            extra.close()
        for worker in workers:
            worker.close()
    last = next((tail for n, tail in reversed(results) if n), b"")
    return sum(n for n, _ in results), last


def canonical_text_sql(column: str, pg_type: str) -> sql.Composable:
    """The SQL expression of a column's canonical text (docs/chain.md §11), over alias r."""
    col = sql.SQL("r.{}").format(sql.Identifier(column))
    if pg_type == "text":
        return col
    if pg_type == "timestamp with time zone":
        return sql.SQL("((extract(epoch FROM {}) * 1000000)::bigint)::text").format(col)
    if pg_type == "bytea":
        return sql.SQL("encode({}, 'hex')").format(col)
    return sql.SQL("{}::text").format(col)


def state_lines_copy(table: StateTable) -> sql.Composed:
    """COPY of one state table's bundle lines (docs/chain.md §6, §11), built by PostgreSQL:
    the key and canonical texts of ``audit.state_rows_query``, as a JSON object per row."""
    key = sql.SQL(" || '/' || ").join(
        sql.SQL("r.{}::text").format(sql.Identifier(k)) for k in table.key_columns
    )
    schema, name = table.name.split(".")
    return sql.SQL(
        "COPY (SELECT '{{\"state_table\": ' || to_json({tname}::text)::text"
        " || ', \"key\": ' || to_json({key})::text"
        " || ', \"values\": ' || json_build_array({cols})::text || '}}'"
        " FROM {table} r WHERE r.{ws} = {workspace}) TO STDOUT"
    ).format(
        tname=sql.Literal(table.name),
        key=key,
        cols=sql.SQL(", ").join(canonical_text_sql(c, t) for c, t in table.columns),
        table=sql.Identifier(schema, name),
        ws=sql.Identifier(table.ws_column),
        workspace=sql.Placeholder("workspace"),
    )


def copy_state_lines(conn: psycopg.Connection, workspace_id: str, spool: IO[bytes]) -> int:
    """Write every live state row's bundle line to ``spool``; return how many."""
    count = 0
    for table in STATE_TABLES:
        count += _copy_lines(conn, state_lines_copy(table), {"workspace": workspace_id}, spool)
    return count


def _copy_lines(
    conn: psycopg.Connection, statement: sql.Composed, params: dict[str, object], spool: IO[bytes]
) -> int:
    """Copy a one-column text COPY to ``spool`` (doubled backslashes undone); return rows."""
    copier = _LineCopier(spool)
    with conn.cursor().copy(statement, params) as copy:
        for block in copy:
            copier.add(block)
    return copier.finish()


class BackgroundStateLines:
    """The state lines copied on a connection of their own (sharing ``conn``'s snapshot) into a
    temporary file while the events are copied; ``write_to`` appends them to the bundle."""

    def __init__(self, conn: psycopg.Connection, dsn: str, workspace_id: str) -> None:
        self._worker = snapshot_workers(conn, dsn, workspace_id, 1)[0]
        self._file = tempfile.TemporaryFile()
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._future = self._pool.submit(copy_state_lines, self._worker, workspace_id, self._file)

    def write_to(self, spool: IO[bytes]) -> int:
        """Wait for the copy; append its lines to ``spool``; return how many."""
        count = self._future.result()
        self._file.seek(0)
        shutil.copyfileobj(self._file, spool, 1 << 20)
        return count

    def close(self) -> None:
        """Release the connection and the file (after ``write_to``, or on failure)."""
        self._pool.shutdown(wait=True)
        self._file.close()
        self._worker.close()
