"""Existing databases upgrade in place and come under the state proof (issue 9).

A database is built with the previous release's migrations only (0001-0009) and populated
through that release's own entry points (``isokron_api.write``/``govern`` naming the actor, and
the erasure that appended no event). Upgrading applies 0010 onwards; then `verify` passes, every
row is proven by the chain (a ``substrate.state.attested`` event per workspace), an old erasure
is chained, a tampered row is named, and new writes work.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from isokron.governance import seeds, vocabulary
from isokron.governance.charter import charter_sections_from_markdown
from isokron.substrate import audit, connection, reads, writes
from isokron.substrate.dsn import DatabaseRoles, SubstrateDSNs
from isokron.substrate.migrate import upgrade

PREVIOUS_RELEASE = "0009.append-and-read-paths"
# The previous release used these cluster-wide role names in every database.
SHARED_ROLES = DatabaseRoles("isokron_owner", "isokron_reader", "isokron_gateway")
SHARED_ROLE_GRANTS_SQL = """
SELECT
  (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
  + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
  + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid) AS owned,
  (SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a WHERE a.grantee = r.oid)
  + (SELECT count(*) FROM pg_proc p, aclexplode(p.proacl) a WHERE a.grantee = r.oid)
  + (SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = r.oid)
  + (SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a
     WHERE d.datname = current_database() AND a.grantee = r.oid)
  + (SELECT count(*) FROM pg_policy p WHERE r.oid = ANY (p.polroles)) AS granted
FROM pg_roles r WHERE r.rolname = %s
"""
OLD_WRITE_SQL = "SELECT isokron_api.write(%s, %s, %s::uuid, %s::jsonb, NULL)"
OLD_GOVERN_SQL = "SELECT isokron_api.govern(%s, %s, %s::uuid, %s::jsonb, NULL)"
OLD_CREATE_SQL = "SELECT isokron_api.create_workspace(%s, %s, %s::jsonb)"
OLD_ERASE_SQL = "SELECT isokron_api.erase_event_payload(%s, %s, %s)"


def _populate_previous_release(dsn: str, workspace_id: str) -> dict[str, Any]:
    """Write a workspace through the 0001-0009 functions, as that release's CLI did."""
    actors = [{"actor_kind": k, "display_name": v} for k, v in vocabulary.ACTOR_KINDS.items()]
    with psycopg.connect(dsn, autocommit=True) as conn:

        def call(sql: str, *params: Any) -> Any:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            value = row[0]
            return json.loads(value) if isinstance(value, str) else value

        created = call(OLD_CREATE_SQL, workspace_id, "previous release", json.dumps(actors))
        op = created["operator_actor_id"]
        kinds = {a["actor_kind"]: a["actor_id"] for a in created["actors"]}
        kora = kinds["kora"]

        def govern(name: str, args: dict[str, Any]) -> Any:
            return call(OLD_GOVERN_SQL, name, workspace_id, op, json.dumps(args))

        def write(name: str, args: dict[str, Any], actor: str = kora) -> Any:
            return call(OLD_WRITE_SQL, name, workspace_id, actor, json.dumps(args))

        md = seeds.DEFAULT_CHARTER_MD
        govern(
            "set_charter",
            {"content_md": md, "sections": dict(charter_sections_from_markdown(md))},
        )
        govern("set_policies", {"policies": seeds.default_policy_rows()})
        govern("set_capabilities", {"capabilities": seeds.default_capability_rows()})
        govern("revise_constitution", {"rules": seeds.DEFAULT_CONSTITUTION_RULES})
        token = writes.new_token()
        issued = govern(
            "issue_token",
            {
                "holder_actor_id": kora,
                "token_sha256": writes.token_sha256(token).hex(),
                "token_prefix": writes.token_public_prefix(token),
            },
        )
        govern("revoke_token", {"token_id": issued["token_id"]})
        a = write("iso_node_create", {"node_type": "fact", "title": "old node"})
        b = write("iso_node_create", {"node_type": "fact", "title": "other"})
        write("iso_node_supersede", {"node_id": a["node_id"], "title": "old node v2"})
        write(
            "iso_link_create",
            {"from_node_id": b["node_id"], "to_node_id": a["node_id"], "link_type": "supports"},
        )
        write(
            "write_scratchpad_entry",
            writes.scratchpad_args(kind="plan", summary="old plan", content="old content"),
        )
        p = write(
            "propose_policy_change",
            {"policy_key": "policy.kora_rate_limit_per_minute", "proposed_value": 30},
        )
        write(
            "decide_proposal",
            {
                "proposal_kind": "policy_change",
                "proposal_id": p["proposal_id"],
                "decision": "accepted",
            },
            op,
        )
        write("propose_convention", {"title": "t", "body": "b"})
        e = write(
            "raise_escalation",
            {
                "tool": "iso_node_create",
                "reason": "held",
                "request": {
                    "op": "iso_node_create",
                    "args": {"node_type": "fact", "title": "held"},
                },
            },
        )
        write(
            "decide_escalation", {"escalation_id": e["escalation_id"], "decision": "approved"}, op
        )
        secret = write("append_event", {"event_type": "kora.note.recorded", "payload": {"s": 1}})
        conn.execute(OLD_ERASE_SQL, (workspace_id, secret["seq"], "GDPR request 7"))
    return {"kora": kora, "operator": op, "erased_seq": secret["seq"]}


@pytest.fixture(scope="module")
def upgraded(fresh_database: Callable[[], str]) -> tuple[str, list[str], dict[str, Any]]:
    dsn = fresh_database()
    upgrade(dsn, until=PREVIOUS_RELEASE, roles=SHARED_ROLES)
    workspaces = [f"old-{uuid4().hex[:8]}" for _ in range(2)]
    info = {}
    for ws in workspaces:
        info[ws] = _populate_previous_release(dsn, ws)
    applied = upgrade(dsn).applied
    assert applied and all(int(m.split(".")[0]) > 9 for m in applied)
    return dsn, workspaces, info


def test_a_database_of_the_previous_release_verifies_after_the_upgrade(
    upgraded: tuple[str, list[str], dict[str, Any]],
) -> None:
    dsn, workspaces, _ = upgraded
    for ws in workspaces:
        report = audit.verify_workspace(dsn, ws)
        assert report.ok, report.to_dict()
        assert report.rows_checked > 31 + 49  # policies and capabilities at least
        with psycopg.connect(dsn) as conn:
            types = [
                r[0]
                for r in conn.execute(
                    "SELECT event_type FROM hivex_foundation.event_log "
                    "WHERE workspace_id = %s AND event_type LIKE 'substrate.%%' ORDER BY seq",
                    (ws,),
                )
            ]
        # The old erasure is chained, then the state of the workspace attested, once each.
        assert types == ["substrate.payload.erased", "substrate.state.attested"]
    # Re-running the upgrade appends nothing more.
    assert upgrade(dsn).applied == ()


def test_after_the_upgrade_the_shared_roles_hold_nothing_in_this_database(
    upgraded: tuple[str, list[str], dict[str, Any]],
) -> None:
    dsn, _, _ = upgraded
    with psycopg.connect(dsn) as conn:
        for role in SHARED_ROLES.as_substitutions():
            row = conn.execute(SHARED_ROLE_GRANTS_SQL, (role,)).fetchone()
            assert row == (0, 0), (role, row)


def test_after_the_upgrade_a_tampered_old_row_is_named(
    upgraded: tuple[str, list[str], dict[str, Any]],
) -> None:
    dsn, workspaces, _ = upgraded
    ws = workspaces[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE public.kora_policy_registry SET policy_value = 'true' "
            "WHERE workspace_id = %s AND policy_key = 'policy.kora_disabled'",
            (ws,),
        )
    report = audit.verify_workspace(dsn, ws)
    messages = [f.message for f in report.findings if f.kind == "state_mismatch"]
    assert len(messages) == 1
    assert "public.kora_policy_registry row policy.kora_disabled" in messages[0]
    assert "policy_value" in messages[0]


async def test_the_upgraded_database_takes_new_authenticated_writes(
    upgraded: tuple[str, list[str], dict[str, Any]],
) -> None:
    dsn, workspaces, info = upgraded
    ws = workspaces[0]
    conn = await connection.connect(dsn)
    try:
        issued = await writes.issue_token(conn, ws, info[ws]["operator"], info[ws]["kora"])
    finally:
        await conn.close()
    # Through this database's own gateway and reader roles (moved from the shared ones).
    dsns = SubstrateDSNs.derive(dsn)
    gateway = await connection.connect(dsns.gateway)
    try:
        node = await writes.write_with_token(
            gateway,
            "iso_node_create",
            writes.token_sha256(issued.token),
            {"node_type": "fact", "title": "after the upgrade"},
        )
    finally:
        await gateway.close()
    reader = await connection.connect(dsns.reader)
    try:
        titles = [n.title for n in await reads.search_iso_nodes(reader, ws, "upgrade")]
        # Identity and governance written by the old release are vouched for by the attestation.
        await reads.read_active_role_charter(reader, ws)
        assert len(await reads.read_policy_registry(reader, ws)) == 31
        assert (await reads.read_capability_row(reader, ws, "kora")).granted
    finally:
        await reader.close()
    assert node["seq"] > 0 and titles == ["after the upgrade"]
    report = audit.verify_workspace(dsn, ws)
    assert report.ok, report.to_dict()
