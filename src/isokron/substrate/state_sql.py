"""SQL text of the canonical row form (docs/chain.md §11), built from ``chain.state``.

Used by the reads that check what they present against its approving event (invariant 4) and by
``audit`` (verify and export). Table and column names come from ``STATE_TABLES`` constants,
never from input.
"""

from __future__ import annotations

from isokron.chain.state import STATE_TABLES_BY_NAME, StateTable


def canonical_text(expr: str, pg_type: str) -> str:
    """The SQL expression of a value's canonical text, by its column type."""
    if pg_type == "text":
        return expr
    if pg_type == "timestamp with time zone":
        return f"((extract(epoch FROM {expr}) * 1000000)::bigint)::text"
    if pg_type == "bytea":
        return f"encode({expr}, 'hex')"
    return f"{expr}::text"


def key_text(table: StateTable, alias: str) -> str:
    """The SQL expression of a row's key text (key columns joined by ``/``)."""
    return " || '/' || ".join(f"{alias}.{k}::text" for k in table.key_columns)


def row_digest(table_name: str, alias: str) -> str:
    """The SQL expression of a row's record digest ``d`` (hex), computed by the database."""
    table = STATE_TABLES_BY_NAME[table_name]
    fields = ", ".join(
        f"hivex_foundation.row_field('{c}', {canonical_text(f'{alias}.{c}', t)})"
        for c, t in table.columns
    )
    return f"(hivex_foundation.row_record('{table.name}', ARRAY[{fields}]) ->> 'd')"


def recorded_digest(table_name: str, alias: str, event: str, attested: str) -> str:
    """The digest the approving event (``event`` alias) records for the row, or else the one
    the workspace's latest state attestation (``attested.state``) records."""
    table = STATE_TABLES_BY_NAME[table_name]
    key = key_text(table, alias)
    return (
        f"coalesce({event}.payload -> 'state' -> '{table.name}' -> ({key}), "
        f"{attested}.state -> '{table.name}' -> ({key})) ->> 'd'"
    )


def verified_column(table_name: str, alias: str) -> str:
    """``<expr> AS verified``: the row equals what its approving event (or attestation) says."""
    return (
        f"coalesce({recorded_digest(table_name, alias, 'ev', 'att')} = "
        f"{row_digest(table_name, alias)}, false) AS verified"
    )


def approval_joins(alias: str) -> str:
    """The joins ``verified_column`` needs: the approving event and the latest attestation."""
    return (
        f"LEFT JOIN hivex_foundation.event_log ev ON ev.workspace_id = {alias}.workspace_id "
        f"AND ev.event_id = {alias}.approved_event_id "
        "LEFT JOIN LATERAL (SELECT a.payload -> 'state' AS state "
        "FROM hivex_foundation.event_log a WHERE a.workspace_id = $1 "
        "AND a.event_type = 'substrate.state.attested' ORDER BY a.seq DESC LIMIT 1) att ON true"
    )
