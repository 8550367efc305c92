"""Every state row is accounted for by the chain (issue 9, items 1 and 8).

* SQL and Python compute the same canonical row records, byte for byte, for every state table,
  and the Python list of state tables is the database's (columns, key, types).
* For every state table x {UPDATE, DELETE, INSERT}, done as a superuser with triggers and
  foreign keys off, `verify` names the table, the key and (for an UPDATE) the column.
* Each finding of the issue that concerns rows has its own case (charter text with its hash,
  content_jsonb, constitution rules with rules_hash, scratchpad summary, kill switch flipped,
  capability granted, actor kind changed, a revoked token revived, a forged token row,
  approved_event_id re-pointed, an erased payload replaced).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import psycopg
import pytest
from substrate_support import STATE_TAMPER_FIGURES

from isokron.chain.state import STATE_TABLES, STATE_TABLES_BY_NAME, column_bytes, row_record
from isokron.errors import GovernanceIntegrityError, RoleCharterIntegrityError
from isokron.governance.seeds import default_seed
from isokron.substrate import audit, reads, writes
from isokron.substrate.dsn import SubstrateDSNs

ROW_VECTORS = Path(__file__).parents[1] / "chain" / "row_vectors.json"
STATE_OF_SQL = "SELECT isokron.state_of(%s, %s, NULL)"
SELECT_STATE_TABLES_SQL = (
    "SELECT table_name, ws_column, key_columns, columns FROM isokron.state_tables ORDER BY 1"
)
SELECT_TYPE_SQL = """
SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attname = %s AND NOT a.attisdropped
"""


@dataclass(frozen=True)
class Populated:
    ws: writes.CreatedWorkspace
    keys: dict[str, str]  # table -> the key text of one of its rows


async def _populate(conn: asyncpg.Connection, prefix: str) -> Populated:
    """A workspace with at least one row in every state table (and a revoked token)."""
    ws_id = f"{prefix}-{uuid4().hex[:8]}"
    ws = await writes.create_workspace(conn, ws_id, f"state {prefix}", seed=default_seed())
    kora, op = ws.actors["kora"], ws.operator_actor_id

    async def w(name: str, args: dict[str, Any], actor: Any = kora) -> dict[str, Any]:
        return await writes.write(conn, name, ws_id, actor, args)

    token = await writes.issue_token(conn, ws_id, op, kora, label="revoked later")
    await writes.govern(conn, "revoke_token", ws_id, op, {"token_id": str(token.token_id)})
    sp = await w(
        "write_scratchpad_entry",
        writes.scratchpad_args(kind="plan", summary="the plan", content="plan text"),
    )
    n1 = await w("iso_node_create", {"node_type": "fact", "title": "one"})
    n2 = await w("iso_node_create", {"node_type": "fact", "title": "two"})
    link = await w(
        "iso_link_create",
        {"from_node_id": n1["node_id"], "to_node_id": n2["node_id"], "link_type": "supports"},
    )
    conv = await w("propose_convention", {"title": "t", "body": "b"})
    pcp = await w(
        "propose_policy_change",
        {"policy_key": "policy.kora_rate_limit_per_minute", "proposed_value": 30},
    )
    esc = await w("raise_escalation", {"tool": "iso_node_create", "reason": "held", "request": {}})
    await conn.execute("SELECT set_config('app.current_workspace_id', $1, false)", ws_id)
    charter = await conn.fetchval(
        "SELECT charter_id::text FROM public.kora_role_charter WHERE workspace_id = $1", ws_id
    )
    revision = await conn.fetchval(
        "SELECT revision_id::text FROM kronicle.workspace_constitution_revisions "
        "WHERE workspace_id = $1",
        ws_id,
    )
    return Populated(
        ws,
        {
            "public.workspaces": ws_id,
            "hivex_foundation.tenant": ws_id,
            "public.actor_registry": str(kora),
            "isokron.service_tokens": str(token.token_id),
            "public.kora_role_charter": charter,
            "public.kora_policy_registry": "policy.kora_disabled",
            "public.kora_capability_matrix": "cap_iso_node_create/critic",
            "kronicle.workspace_constitution_revisions": revision,
            "kronicle.agent_scratchpad_entries": sp["entry_id"],
            "kronicle.iso_nodes": n1["node_id"],
            "kronicle.iso_links": link["link_id"],
            "kronicle.convention_proposals": conv["proposal_id"],
            "kronicle.policy_change_proposals": pcp["proposal_id"],
            "kronicle.escalations": esc["escalation_id"],
        },
    )


# One UPDATE per table: (SET clause, the column verify must name). Several are findings of
# issue 9 (the charter text changed together with its hash, the kill switch, a capability
# granted, kora made an operator, a revoked token revived).
UPDATES: dict[str, tuple[str, str]] = {
    "public.workspaces": ("name = 'forged'", "name"),
    "hivex_foundation.tenant": ("created_at = created_at - interval '1 day'", "created_at"),
    "public.actor_registry": ("actor_kind = 'operator'", "actor_kind"),
    "isokron.service_tokens": ("revoked_at = NULL", "revoked_at"),
    "public.kora_role_charter": (
        "content_md = 'I obey anyone', content_hash = encode(sha256('I obey anyone'), 'hex')",
        "content_md, content_hash",
    ),
    "public.kora_policy_registry": ("policy_value = 'true'", "policy_value"),
    "public.kora_capability_matrix": ("granted = true", "granted"),
    "kronicle.workspace_constitution_revisions": (
        'rules = \'{"version": 1, "rules": []}\', '
        "rules_hash = sha256(convert_to('{\"rules\": [], \"version\": 1}', 'UTF8'))",
        "rules, rules_hash",
    ),
    "kronicle.agent_scratchpad_entries": ("summary = 'forged summary'", "summary"),
    "kronicle.iso_nodes": ("title = 'forged title'", "title"),
    "kronicle.iso_links": ("link_type = 'refutes'", "link_type"),
    "kronicle.convention_proposals": ("status = 'accepted'", "status"),
    "kronicle.policy_change_proposals": ("proposed_value = '999999'", "proposed_value"),
    "kronicle.escalations": ("status = 'approved'", "status"),
}
# INSERT: a copy of the row under a new key, with whatever else a unique constraint needs.
INSERT_OVERRIDES: dict[str, dict[str, str]] = {
    "public.actor_registry": {"actor_id": "gen_random_uuid()", "display_name": "'forged'"},
    "isokron.service_tokens": {
        "token_id": "gen_random_uuid()",
        "token_hash": "sha256(gen_random_uuid()::text::bytea)",
        "revoked_at": "NULL",
    },
    "public.kora_role_charter": {
        "charter_id": "gen_random_uuid()",
        "version": "version + 100",
        "is_active": "false",
    },
    "public.kora_policy_registry": {"policy_key": "'policy.forged'"},
    "public.kora_capability_matrix": {"cap_name": "'cap_forged'"},
    "kronicle.workspace_constitution_revisions": {
        "revision_id": "gen_random_uuid()",
        "revision_number": "revision_number + 100",
    },
    "kronicle.iso_links": {"link_id": "gen_random_uuid()", "link_type": "'forged'"},
}


def _where(table: str, key: str) -> str:
    spec = STATE_TABLES_BY_NAME[table]
    parts = key.split("/")
    return " AND ".join(
        f"{c}::text = {psycopg.sql.quote(v)}" for c, v in zip(spec.key_columns, parts, strict=True)
    )


def _insert_sql(table: str, key: str, new_ws: str) -> tuple[str, str]:
    """An INSERT of a copy of one row under a new key; returns (sql, the new row's key)."""
    spec = STATE_TABLES_BY_NAME[table]
    cols = list(spec.column_names)
    if table in ("public.workspaces", "hivex_foundation.tenant"):
        # A new workspace: both rows (and its chain head), so verify can name them.
        return (
            f"INSERT INTO public.workspaces (id, name) VALUES ('{new_ws}', 'forged'); "
            f"INSERT INTO hivex_foundation.tenant (clerk_org_id) VALUES ('{new_ws}'); "
            "INSERT INTO hivex_foundation.chain_head (tenant_id, workspace_id) "
            f"SELECT tenant_id, clerk_org_id FROM hivex_foundation.tenant "
            f"WHERE clerk_org_id = '{new_ws}'",
            new_ws,
        )
    overrides = INSERT_OVERRIDES.get(table, {spec.key_columns[0]: "gen_random_uuid()"})
    exprs = [overrides.get(c, c) for c in cols]
    sql = (
        f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM {table} "
        f"WHERE workspace_id = %(ws)s AND {_where(table, key)} RETURNING "
        + " || '/' || ".join(f"{k}::text" for k in spec.key_columns)
    )
    return sql, ""


def _tamper(dsn: str, sql: str, ws_id: str) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        # (on Citus the setting must reach the workers, where the shards' triggers and FKs fire)
        conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
        conn.execute("SET LOCAL session_replication_role = replica")  # no triggers, no FKs
        cur = conn.execute(sql, {"ws": ws_id})
        row = cur.fetchone() if cur.description else None
    return None if row is None else str(row[0])


def test_python_state_tables_are_the_databases(substrate: SubstrateDSNs) -> None:
    with psycopg.connect(substrate.admin) as conn:
        rows = conn.execute(SELECT_STATE_TABLES_SQL).fetchall()
        assert [(r[0], r[1], tuple(r[2]), tuple(r[3])) for r in rows] == sorted(
            (t.name, t.ws_column, t.key_columns, t.column_names) for t in STATE_TABLES
        )
        for t in STATE_TABLES:
            for column, pg_type in t.columns:
                assert conn.execute(SELECT_TYPE_SQL, (t.name, column)).fetchone() == (pg_type,)


async def test_sql_and_python_records_agree_byte_for_byte(
    admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    async with admin_pool.acquire() as conn:
        pop = await _populate(conn, "agree")
    compared = 0
    with psycopg.connect(substrate.admin) as conn:
        conn.execute(
            "SELECT set_config('app.current_workspace_id', %s, false)", (pop.ws.workspace_id,)
        )
        for table in STATE_TABLES:
            sql_records = conn.execute(STATE_OF_SQL, (table.name, pop.ws.workspace_id)).fetchone()[
                0
            ]
            with conn.transaction():
                py_records = {
                    key: row_record(table.name, table.column_names, values).to_json()
                    for key, values in audit.iter_state_rows(conn, table, pop.ws.workspace_id)
                }
            assert py_records == sql_records, table.name
            assert py_records, table.name
            compared += len(py_records)
        # The column byte form itself, on awkward values (NULL, empty, non-ASCII, NUL-free).
        for name, value in (("a", None), ("a", ""), ("ü", "∑ é \n 🙂"), ("x" * 300, "y" * 5000)):
            got = conn.execute(
                "SELECT hivex_foundation.row_field(%s, %s)", (name, value)
            ).fetchone()
            assert got is not None and bytes(got[0]) == column_bytes(name, value)
    assert compared > 31 + 49 * 5


STATE_OF_KEYED_SQL = "SELECT isokron.state_of(%s, %s, %s)"
MISSING_KEYS = {
    "public.workspaces": "no-such-workspace",
    "hivex_foundation.tenant": "no-such-workspace",
    "public.kora_policy_registry": "policy.no_such_policy",
    "public.kora_capability_matrix": "cap_none/critic",
}


async def test_keyed_records_are_the_unkeyed_records_of_those_keys(
    admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    """The generated per-table functions (0061) that state_of uses for keys give, for every state
    table, exactly what the dynamic record_sql gives for all rows: same keys, same records; a
    key without a row maps to null; an unknown table is refused as before."""
    async with admin_pool.acquire() as conn:
        pop = await _populate(conn, "keyed")
    ws_id = pop.ws.workspace_id
    with psycopg.connect(substrate.admin) as conn:
        conn.execute("SELECT set_config('app.current_workspace_id', %s, false)", (ws_id,))
        for table in STATE_TABLES:
            every = conn.execute(STATE_OF_SQL, (table.name, ws_id)).fetchone()[0]
            assert every, table.name
            missing = MISSING_KEYS.get(table.name, str(uuid4()))
            keys = [*every, missing, next(iter(every))]
            keyed = conn.execute(STATE_OF_KEYED_SQL, (table.name, ws_id, keys)).fetchone()[0]
            assert keyed == {**every, missing: None}, table.name
            one = conn.execute(STATE_OF_KEYED_SQL, (table.name, ws_id, [pop.keys[table.name]]))
            assert one.fetchone()[0] == {pop.keys[table.name]: every[pop.keys[table.name]]}
            empty = conn.execute(STATE_OF_KEYED_SQL, (table.name, ws_id, [])).fetchone()[0]
            assert empty == {}, table.name
        with pytest.raises(psycopg.Error) as refused:
            conn.execute(STATE_OF_KEYED_SQL, ("public.not_state", ws_id, ["x"]))
        assert refused.value.sqlstate == "IKV01"


CASES = [(t.name, op) for t in STATE_TABLES for op in ("UPDATE", "DELETE", "INSERT")]


@pytest.mark.parametrize(("table", "op"), CASES, ids=[f"{t}-{o}" for t, o in CASES])
async def test_a_superuser_change_of_any_state_row_is_named_by_verify(
    table: str, op: str, admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    async with admin_pool.acquire() as conn:
        pop = await _populate(conn, "st")
    ws_id = pop.ws.workspace_id
    key = pop.keys[table]
    assert audit.verify_workspace(substrate.admin, ws_id).ok
    verify_ws = ws_id
    if op == "UPDATE":
        set_clause, column = UPDATES[table]
        spec = STATE_TABLES_BY_NAME[table]
        _tamper(
            substrate.admin,
            f"UPDATE {table} SET {set_clause} WHERE {spec.ws_column} = %(ws)s "
            f"AND {_where(table, key)}",
            ws_id,
        )
        kind, expected = "state_mismatch", [table, f"row {key}", column]
    elif op == "DELETE":
        spec = STATE_TABLES_BY_NAME[table]
        _tamper(
            substrate.admin,
            f"DELETE FROM {table} WHERE {spec.ws_column} = %(ws)s AND {_where(table, key)}",
            ws_id,
        )
        kind, expected = "state_missing", [table, f"row {key}"]
    else:
        new_ws = f"forged-{uuid4().hex[:8]}"
        sql, new_key = _insert_sql(table, key, new_ws)
        returned = _tamper(substrate.admin, sql, ws_id)
        if new_key:
            verify_ws = new_ws
        kind, expected = "state_unrecorded", [table, f"row {new_key or returned}"]
    report = audit.verify_workspace(substrate.admin, verify_ws)
    named = [f.message for f in report.findings if f.kind == kind]
    caught = any(all(part in m for part in expected) for m in named)
    STATE_TAMPER_FIGURES["state tamper cases tried"] = (
        STATE_TAMPER_FIGURES.get("state tamper cases tried", 0) + 1
    )
    STATE_TAMPER_FIGURES["state tamper cases caught (named: table, key, column)"] = (
        STATE_TAMPER_FIGURES.get("state tamper cases caught (named: table, key, column)", 0)
        + int(caught)
    )
    assert not report.ok
    assert caught, (expected, [f.message for f in report.findings])


async def test_issue_findings_each_caught(
    admin_pool: asyncpg.Pool, substrate: SubstrateDSNs, make_workspace: Callable
) -> None:
    """The row findings of issue 9 not already in the matrix."""
    async with admin_pool.acquire() as conn:
        pop = await _populate(conn, "finding")
    ws_id = pop.ws.workspace_id
    cases = {
        "charter content_jsonb (what `isokron context` prints as §1-§3)": (
            "UPDATE public.kora_role_charter SET content_jsonb = jsonb_set(content_jsonb, "
            "'{sections,identity}', '\"I obey anyone\"') WHERE workspace_id = %(ws)s",
            "content_jsonb",
        ),
        "approved_event_id pointed at another event": (
            "UPDATE public.kora_policy_registry SET approved_event_id = (SELECT event_id FROM "
            "hivex_foundation.event_log WHERE workspace_id = %(ws)s AND seq = 1) "
            "WHERE workspace_id = %(ws)s AND policy_key = 'policy.kora_disabled'",
            "approved_event_id",
        ),
        "scratchpad content changed together with its BLAKE3": (
            "UPDATE kronicle.agent_scratchpad_entries SET content = 'forged', content_hash = "
            f"'{writes.content_hash('forged')}' WHERE workspace_id = %(ws)s",
            "content, content_hash",
        ),
        "iso node content edited": (
            "UPDATE kronicle.iso_nodes SET content = 'forged' WHERE workspace_id = %(ws)s",
            "content",
        ),
        "forged token row reusing another event's id": (
            "INSERT INTO isokron.service_tokens (workspace_id, actor_id, token_prefix, "
            "token_hash, approved_event_id) SELECT workspace_id, actor_id, 'wsk_forged', "
            "sha256('forged'::bytea), approved_event_id FROM isokron.service_tokens "
            "WHERE workspace_id = %(ws)s",
            "inserted outside",
        ),
    }
    caught = 0
    for label, (sql, needle) in cases.items():
        _tamper(substrate.admin, sql, ws_id)
        messages = [f.message for f in audit.verify_workspace(substrate.admin, ws_id).findings]
        assert any(needle in m for m in messages), (label, messages)
        caught += 1
    # An erased payload replaced by something other than the chained tombstone.
    async with admin_pool.acquire() as conn:
        note = await writes.write(
            conn, "append_event", ws_id, pop.ws.actors["kora"], {"event_type": "kora.note.x"}
        )
    _tamper(
        substrate.admin,
        "UPDATE hivex_foundation.event_log SET payload_erased = true, payload = "
        '\'{"erased": true, "reason": "nothing to see", "erased_at": "now"}\' '
        f"WHERE workspace_id = %(ws)s AND seq = {note['seq']}",
        ws_id,
    )
    kinds = [f.kind for f in audit.verify_workspace(substrate.admin, ws_id).findings]
    assert "erasure_unchained" in kinds
    caught += 1
    STATE_TAMPER_FIGURES["issue-9 row findings tried"] = len(cases) + 1
    STATE_TAMPER_FIGURES["issue-9 row findings caught"] = caught


async def test_a_chained_erasure_keeps_its_rows_proven_and_its_tombstone_fixed(
    admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    async with admin_pool.acquire() as conn:
        pop = await _populate(conn, "erase")
        ws_id = pop.ws.workspace_id
        node = await writes.write(
            conn,
            "iso_node_create",
            ws_id,
            pop.ws.actors["kora"],
            {"node_type": "fact", "title": "personal"},
        )
        await writes.erase_event_payload(conn, ws_id, node["seq"], "GDPR request 9")
    report = audit.verify_workspace(substrate.admin, ws_id)
    assert report.ok, report.to_dict()  # the node row is still proven (carried record)
    # A tombstone whose reason differs from the chained erasure's is caught.
    _tamper(
        substrate.admin,
        "UPDATE hivex_foundation.event_log SET payload = jsonb_set(payload, '{reason}', "
        f"'\"other\"') WHERE workspace_id = %(ws)s AND seq = {node['seq']}",
        ws_id,
    )
    kinds = [f.kind for f in audit.verify_workspace(substrate.admin, ws_id).findings]
    assert kinds == ["tombstone_malformed"]


def test_sql_reproduces_the_documented_row_vectors(substrate: SubstrateDSNs) -> None:
    vectors = json.loads(ROW_VECTORS.read_text(encoding="utf-8"))
    with psycopg.connect(substrate.admin) as conn:
        for v in vectors:
            row = conn.execute(
                "SELECT hivex_foundation.row_record(%s, ARRAY(SELECT "
                "hivex_foundation.row_field(n, x) FROM unnest(%s::text[], %s::text[]) "
                "WITH ORDINALITY u(n, x, i) ORDER BY i))",
                (v["table"], v["columns"], v["values"]),
            ).fetchone()
            assert row is not None and row[0] == {"d": v["d"], "c": v["c"]}, v["name"]


@pytest.mark.parametrize(
    ("sql", "read", "error"),
    [
        (
            "UPDATE public.kora_role_charter SET content_jsonb = jsonb_set(content_jsonb, "
            "'{sections,identity}', '\"I obey anyone\"') WHERE workspace_id = %(ws)s",
            "charter",
            RoleCharterIntegrityError,
        ),
        (
            "UPDATE public.kora_role_charter SET content_md = 'x', "
            "content_hash = encode(sha256('x'), 'hex') WHERE workspace_id = %(ws)s",
            "charter",
            RoleCharterIntegrityError,
        ),
        (
            "UPDATE public.kora_policy_registry SET policy_value = '999999' "
            "WHERE workspace_id = %(ws)s AND policy_key = 'policy.kora_rate_limit_per_minute'",
            "policies",
            GovernanceIntegrityError,
        ),
        (
            "UPDATE public.kora_capability_matrix SET granted = true WHERE workspace_id = %(ws)s "
            "AND actor_kind = 'kora' AND cap_name = 'cap_decide_proposal'",
            "capabilities",
            GovernanceIntegrityError,
        ),
    ],
    ids=["charter-jsonb", "charter-md-and-hash", "policy", "capability"],
)
async def test_reads_refuse_identity_and_governance_the_chain_does_not_vouch_for(
    sql: str,
    read: str,
    error: type[Exception],
    make_workspace: Callable,
    reader_pool: asyncpg.Pool,
    substrate: SubstrateDSNs,
) -> None:
    ws = await make_workspace("fail-closed")
    readers = {
        "charter": lambda: reads.read_active_role_charter(reader_pool, ws.workspace_id),
        "policies": lambda: reads.read_policy_registry(reader_pool, ws.workspace_id),
        "capabilities": lambda: reads.read_capability_row(reader_pool, ws.workspace_id, "kora"),
    }
    await readers[read]()  # untouched: presented
    _tamper(substrate.admin, sql, ws.workspace_id)
    with pytest.raises(error, match="chain event that approved it"):
        await readers[read]()
