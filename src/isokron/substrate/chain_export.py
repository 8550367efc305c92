"""The export's event lines, made by PostgreSQL and copied to the file as bytes.

``isokron export`` writes bundle version 3 (docs/chain.md §6): per event the hex of its hash
input, the hex of its stored hash and its payload text, tab-separated. PostgreSQL builds exactly
these fields (the hash input as in :mod:`isokron.substrate.chain_scan`) and sends them with
``COPY … TO STDOUT`` — whose text format separates columns by a tab and ends rows with a line
feed, i.e. already is the line — so the exporter does not turn a single row into Python
objects: it copies blocks of bytes. The one thing COPY's text format changes is the backslash,
which it doubles; jsonb text holds no control characters (JSON escapes them), so undoing that
doubling gives the payload text back byte for byte (tested with payloads full of escapes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import IO
from uuid import UUID

import psycopg
from psycopg import sql

from isokron.chain import DIGEST_SIZE, HASH_PREFIX
from isokron.chain.state import STATE_TABLES, StateTable
from isokron.errors import ChainError

log = logging.getLogger("isokron.substrate.chain_export")

# An event the version-3 line cannot carry: a hash or digest that is not 32 bytes, or an
# occurred_at without a microsecond value. The export refuses; `isokron verify` names it.
SELECT_UNEXPORTABLE_SQL = """
SELECT seq FROM hivex_foundation.event_log
WHERE workspace_id = %(workspace)s AND tenant_id = %(tenant)s
  AND (octet_length(payload_digest) <> 32 OR octet_length(prev_event_hash) <> 32
       OR octet_length(this_event_hash) <> 32 OR NOT isfinite(occurred_at))
ORDER BY seq LIMIT 1
"""
EXPORT_EVENTS_COPY_SQL = """
COPY (
    SELECT encode(%(prefix)s::bytea || (e.prev_event_hash
               || (uuid_send(e.tenant_id) || (int8send(e.seq)
               || (uuid_send(e.event_id) || (uuid_send(e.actor_id)
               || (int8send((extract(epoch FROM e.occurred_at) * 1000000)::bigint)
               || (int4send(octet_length(convert_to(e.event_type, 'UTF8')))
               || (convert_to(e.event_type, 'UTF8') || e.payload_digest)))))))), 'hex'),
           encode(e.this_event_hash, 'hex'),
           CASE WHEN e.payload_erased THEN '' ELSE e.payload::text END
    FROM hivex_foundation.event_log e
    WHERE e.workspace_id = %(workspace)s AND e.tenant_id = %(tenant)s
    ORDER BY e.seq
) TO STDOUT
"""
PROGRESS_EVERY = 100_000
# Hex digits of the seq inside a line's hash input (bytes 65..72 of §4).
_SEQ_HEX = slice(2 * 65, 2 * 73)


def _head(line: bytes) -> tuple[int, bytes]:
    """(seq, this_event_hash) of one version-3 event line."""
    hex_input, hex_hash, _ = line.split(b"\t", 2)
    seq = int.from_bytes(bytes.fromhex(hex_input[_SEQ_HEX].decode("ascii")), "big", signed=True)
    return seq, bytes.fromhex(hex_hash.decode("ascii"))


def copy_event_lines(
    conn: psycopg.Connection,
    tenant: UUID,
    workspace_id: str,
    spool: IO[bytes],
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int | None, bytes | None]:
    """Write the tenant's version-3 event lines to ``spool``; return (count, head_seq,
    head_hash). Raises ChainError (nothing written that matters: the caller's spool is
    discarded) when an event cannot be exported."""
    params = {"workspace": workspace_id, "tenant": tenant, "prefix": HASH_PREFIX}
    bad = conn.execute(SELECT_UNEXPORTABLE_SQL, params).fetchone()
    if bad is not None:
        raise ChainError(
            f"event seq {bad[0]}: a hash or digest is not {DIGEST_SIZE} bytes, or its "
            "occurred_at is not a finite time — the event was damaged; `isokron verify` names it"
        )
    count, reported, tail, last = 0, 0, b"", b""
    write = spool.write
    with conn.cursor().copy(EXPORT_EVENTS_COPY_SQL, params) as copy:
        for block in copy:
            data = tail + bytes(block)
            cut = data.rfind(b"\n") + 1
            if not cut:
                tail = data
                continue
            lines, tail = data[:cut], data[cut:]
            # A row never spans a cut, so every doubled backslash is whole here.
            write(lines.replace(b"\\\\", b"\\") if b"\\" in lines else lines)
            count += lines.count(b"\n")
            last = lines
            if progress is not None and count - reported >= PROGRESS_EVERY:
                reported = count
                progress(count)
    if tail:
        raise ChainError("the database's COPY output ended inside a line")
    if not count:
        return 0, None, None
    seq, head_hash = _head(last[last.rfind(b"\n", 0, len(last) - 1) + 1 :])
    log.info("[isokron.export.copy] tenant=%s events=%d head_seq=%d", tenant, count, seq)
    return count, seq, head_hash


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
    count, tail = 0, b""
    with conn.cursor().copy(statement, params) as copy:
        for block in copy:
            data = tail + bytes(block)
            cut = data.rfind(b"\n") + 1
            lines, tail = data[:cut], data[cut:]
            spool.write(lines.replace(b"\\\\", b"\\") if b"\\" in lines else lines)
            count += lines.count(b"\n")
    if tail:
        raise ChainError("the database's COPY output ended inside a line")
    return count
