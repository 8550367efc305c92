"""Commands that set up and govern the substrate: up, db, workspace, charter, policy,
capability, token."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.table import Table

from isokron.cli.common import (
    DataDirOption,
    DsnOption,
    JsonOption,
    WorkspaceArg,
    boundary,
    out,
    print_json,
    resolve_target,
    run_async,
)
from isokron.errors import ConfigError, NotFoundError
from isokron.governance import seeds
from isokron.governance.arguments import describe_validation_error
from isokron.governance.charter import charter_sections_from_markdown
from isokron.governance.operations import OPERATIONS
from isokron.governance.policies import POLICIES
from isokron.governance.rules import Constitution
from isokron.substrate import admin, citus, connection, reads, writes
from isokron.substrate.dsn import redact_dsn
from isokron.substrate.embedded import default_data_dir, stop_embedded
from isokron.substrate.migrate import upgrade

db_app = typer.Typer(
    help="Database schema: apply migrations; distribute over Citus.", no_args_is_help=True
)
workspace_app = typer.Typer(help="Create and list workspaces.", no_args_is_help=True)
charter_app = typer.Typer(
    help="The workspace's role charter (the agent's identity).", no_args_is_help=True
)
policy_app = typer.Typer(help="The workspace's policy registry.", no_args_is_help=True)
capability_app = typer.Typer(help="The workspace's capability matrix.", no_args_is_help=True)
token_app = typer.Typer(help="Workspace service tokens (wsk_…).", no_args_is_help=True)
constitution_app = typer.Typer(
    help="The workspace's constitution (rules every write is screened against).",
    no_args_is_help=True,
)

DEMO_WORKSPACE = "demo"


def _migrate(dsn: str, quiet: bool) -> list[str]:
    with out.status("applying migrations…") as status:
        result = upgrade(dsn, progress=lambda mid: status.update(f"applying {mid}…"))
    if not quiet:
        for mid in result.applied:
            out.print(f"  applied {mid}")
    return list(result.applied)


@db_app.command("upgrade")
@boundary
def db_upgrade(
    dsn: DsnOption = None, data_dir: DataDirOption = None, json_out: JsonOption = False
) -> None:
    """Apply pending migrations. Re-running is a no-op; existing data is kept."""
    target = resolve_target(dsn, data_dir)
    applied = _migrate(target.dsns.admin, quiet=json_out)
    if json_out:
        print_json({"applied": applied})
    elif not applied:
        out.print("database is up to date")


@db_app.command("distribute")
@boundary
def db_distribute(dsn: DsnOption = None, json_out: JsonOption = False) -> None:
    """Spread the substrate over a Citus cluster (run on the coordinator after `db upgrade`).

    Makes public.workspaces and hivex_foundation.tenant reference tables and distributes every
    other table by workspace_id in one co-location group. Re-running is a no-op.
    """
    target = resolve_target(dsn, None)
    with out.status("distributing…") as status:
        tables = citus.distribute(
            target.dsns.admin, progress=lambda t: status.update(f"distributing {t}…")
        )
    if json_out:
        print_json({"tables": [asdict(t) for t in tables]})
        return
    for t in tables:
        state = "made" if t.created else "already"
        out.print(f"  {state} {t.kind:<11} {t.table} (co-location group {t.colocation_id})")


async def _operator(conn: Any, workspace_id: str) -> UUID:
    await admin.require_workspace(conn, workspace_id)
    operator = await reads.actor_id_of_kind(conn, workspace_id, "operator")
    if operator is None:
        raise NotFoundError(f"workspace {workspace_id!r} has no active operator actor")
    return operator


def as_operator(dsn: str, workspace_id: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Perform one chained operation (governance or decision) as the workspace's operator.

    ``args`` are validated by the operation's argument model (``isokron.governance``) and sent
    as that model's JSON.
    """
    operation = OPERATIONS[op]
    try:
        sql_args = operation.arguments.model_validate(args).sql_args()
    except ValidationError as exc:
        raise ConfigError(f"{op}: {describe_validation_error(exc)}") from None

    async def go(conn: Any) -> dict[str, Any]:
        operator = await _operator(conn, workspace_id)
        perform = writes.govern if operation.governance else writes.write
        return await perform(conn, op, workspace_id, operator, sql_args)

    return run_async(_with_conn(dsn, go))


def read_workspace(dsn: str, workspace_id: str, read: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one read of an existing workspace (unknown workspace: a clean NotFoundError)."""

    async def go(conn: Any) -> Any:
        await admin.require_workspace(conn, workspace_id)
        return await read(conn, workspace_id, *args, **kwargs)

    return run_async(_with_conn(dsn, go))


async def _ensure_workspace(dsn: str, workspace_id: str, name: str | None) -> bool:
    conn = await connection.connect(dsn)
    try:
        if any(w["workspace_id"] == workspace_id for w in await admin.list_workspaces(conn)):
            return False
        await writes.create_workspace(conn, workspace_id, name, seed=seeds.default_seed())
        return True
    finally:
        await conn.close()


def up(
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    workspace: Annotated[
        str, typer.Option(help="Demo workspace to create if missing.")
    ] = DEMO_WORKSPACE,
    json_out: JsonOption = False,
) -> None:
    """Start the substrate (embedded PostgreSQL unless --dsn), migrate, create a demo workspace and
    print how to connect.

    Safe to re-run: migrations already applied and an existing workspace are left as they are.
    """
    target = resolve_target(dsn, data_dir)
    _migrate(target.dsns.admin, quiet=True)
    created = run_async(_ensure_workspace(target.dsns.admin, workspace, "Demo workspace"))
    info = {
        "embedded": target.embedded,
        "data_dir": str(data_dir or default_data_dir()) if target.embedded else None,
        "admin_dsn": redact_dsn(target.dsns.admin),
        "reader_dsn": redact_dsn(target.dsns.reader),
        "gateway_dsn": redact_dsn(target.dsns.gateway),
        "workspace": workspace,
        "workspace_created": created,
    }
    if json_out:
        print_json(info)
        return
    where = f"embedded PostgreSQL in {info['data_dir']}" if target.embedded else "the given server"
    out.print(f"[bold green]IsoKron is up[/] on {where}")
    out.print(f"  workspace   {workspace} ({'created' if created else 'already there'})")
    out.print(f"  admin DSN   {info['admin_dsn']}")
    out.print(f"  reader DSN  {info['reader_dsn']}")
    out.print(f"  gateway DSN {info['gateway_dsn']}")
    out.print("\nNext:")
    for command, what in (
        (f"isokron token issue {workspace}", "a service token for Kora (shown once)"),
        ("isokron serve --transport http", "the MCP write gateway on 127.0.0.1:8765"),
        (f"isokron context {workspace}", "the prompt block an agent starts from"),
        (f"isokron verify {workspace}", "re-compute the hash chain"),
        ("isokron demo", "a whole scripted agent session"),
    ):
        out.print(f"  {command:<36} # {what}", markup=False)


def down(data_dir: DataDirOption = None) -> None:
    """Stop the embedded PostgreSQL (data is kept), whatever earlier processes left behind."""
    stopped = stop_embedded(data_dir or default_data_dir())
    out.print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


# ---------------------------------------------------------------- workspace
@workspace_app.command("create")
@boundary
def workspace_create(
    workspace_id: WorkspaceArg,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    charter: Annotated[
        Path | None,
        typer.Option(
            help="Charter markdown file instead of the default.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a workspace seeded with actors, charter, policies, capabilities and constitution."""
    target = resolve_target(dsn, data_dir)
    md = charter.read_text(encoding="utf-8") if charter else None

    async def go() -> writes.CreatedWorkspace:
        conn = await connection.connect(target.dsns.admin)
        try:
            return await writes.create_workspace(
                conn, workspace_id, name, seed=seeds.default_seed(md)
            )
        finally:
            await conn.close()

    created = run_async(go())
    if json_out:
        print_json(
            {
                "workspace_id": created.workspace_id,
                "tenant_id": created.tenant_id,
                "actors": created.actors,
                "events": created.events,
            }
        )
        return
    out.print(f"created workspace [bold]{created.workspace_id}[/] (tenant {created.tenant_id})")
    for kind, actor_id in sorted(created.actors.items()):
        out.print(f"  actor {kind:<10} {actor_id}")


@workspace_app.command("list")
@boundary
def workspace_list(
    dsn: DsnOption = None, data_dir: DataDirOption = None, json_out: JsonOption = False
) -> None:
    """List workspaces with their number of chain events."""
    target = resolve_target(dsn, data_dir)
    rows = run_async(_with_conn(target.dsns.admin, admin.list_workspaces))
    if json_out:
        print_json(rows)
        return
    table = Table("workspace", "name", "events", "tenant")
    for r in rows:
        table.add_row(r["workspace_id"], r["name"], str(r["events"]), str(r["tenant_id"]))
    out.print(table)


async def _with_conn(dsn: str, fn: Any, *args: Any) -> Any:
    conn = await connection.connect(dsn)
    try:
        return await fn(conn, *args)
    finally:
        await conn.close()


# ---------------------------------------------------------------- charter
@charter_app.command("set")
@boundary
def charter_set(
    workspace_id: WorkspaceArg,
    file: Annotated[
        Path,
        typer.Argument(
            help="Markdown file with ## Identity, ## Authority — can do, ## Authority — cannot do.",
            exists=True,
            dir_okay=False,
        ),
    ],
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Install a new charter version (the previous one stays in history, inactive)."""
    md = file.read_text(encoding="utf-8")
    sections = charter_sections_from_markdown(md)
    target = resolve_target(dsn, data_dir)

    result = as_operator(
        target.dsns.admin,
        workspace_id,
        "set_charter",
        {"content_md": md, "sections": dict(sections)},
    )
    if json_out:
        print_json(result)
    else:
        out.print(
            f"charter v{result['version']} active (sha256 {result['content_hash']}), "
            f"event {result['event_id']}"
        )


@charter_app.command("show")
@boundary
def charter_show(
    workspace_id: WorkspaceArg,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Print the active charter after verifying its SHA-256 (fails closed)."""
    target = resolve_target(dsn, data_dir)

    charter = read_workspace(target.dsns.admin, workspace_id, reads.read_active_role_charter)
    if json_out:
        print_json(
            {
                "version": charter.version,
                "content_hash": charter.content_hash,
                "identity": charter.identity,
                "authority_can_do": charter.authority_can_do,
                "authority_cannot_do": charter.authority_cannot_do,
                "content_md": charter.content_md,
            }
        )
    else:
        out.print(
            f"[dim]charter v{charter.version} · sha256 {charter.content_hash} · verified[/]\n"
        )
        out.print(charter.content_md, markup=False)


# ---------------------------------------------------------------- policy
@policy_app.command("set")
@boundary
def policy_set(
    workspace_id: WorkspaceArg,
    key: Annotated[str, typer.Argument(help="Policy key, e.g. policy.kora_disabled.")],
    value: Annotated[str, typer.Argument(help="JSON value, e.g. true, 60, '\"text\"'.")],
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Set one policy value (chained as governance.policy.set)."""
    try:
        parsed = json.loads(value)
    except RecursionError:
        raise ConfigError("policy value is nested too deeply to be a policy value") from None
    except json.JSONDecodeError:
        raise ConfigError(
            f"policy value {value!r} is not JSON; quote strings: '\"{value}\"'"
        ) from None
    target = resolve_target(dsn, data_dir)

    result = as_operator(
        target.dsns.admin,
        workspace_id,
        "set_policies",
        {"policies": [{"policy_key": key, "policy_value": parsed}]},
    )
    if json_out:
        print_json(result)
    else:
        out.print(f"{key} = {json.dumps(parsed)} (event {result['event_id']})", markup=False)


@policy_app.command("list")
@boundary
def policy_list(
    workspace_id: WorkspaceArg,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the workspace's policies: value, unit, seeded default and what each does."""
    target = resolve_target(dsn, data_dir)

    rows = read_workspace(target.dsns.admin, workspace_id, reads.read_policy_registry)
    if json_out:
        print_json({p.policy_key: p.value for p in rows})
        return
    table = Table("policy", "value", "unit", "default", "description")
    for p in rows:
        known = POLICIES.get(p.policy_key)
        table.add_row(
            p.policy_key,
            json.dumps(p.value),
            known.unit if known else "",
            json.dumps(known.default) if known else "",
            known.description if known else p.description,
        )
    out.print(table)


# ---------------------------------------------------------------- capability
@capability_app.command("list")
@boundary
def capability_list(
    workspace_id: WorkspaceArg,
    actor_kind: Annotated[str, typer.Option(help="Actor kind whose column to show.")] = "kora",
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one actor kind's capabilities: granted and denied."""
    target = resolve_target(dsn, data_dir)

    row = read_workspace(target.dsns.admin, workspace_id, reads.read_capability_row, actor_kind)
    if json_out:
        print_json({"actor_kind": actor_kind, "capabilities": row.capabilities})
        return
    out.print(f"{actor_kind}: {len(row.granted)} of {len(row.capabilities)} capabilities granted")
    for name in sorted(row.capabilities):
        mark = "[green]granted[/]" if row.capabilities[name] else "[red]denied[/]"
        out.print(f"  {name:<40} {mark}")


@capability_app.command("set")
@boundary
def capability_set(
    workspace_id: WorkspaceArg,
    cap_name: Annotated[str, typer.Argument(help="Capability, e.g. cap_iso_node_create.")],
    actor_kind: Annotated[str, typer.Argument(help="Actor kind, e.g. kora.")],
    grant: Annotated[bool, typer.Option("--grant/--deny", help="Grant or deny.")] = True,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Grant or deny one capability to one actor kind (chained)."""
    target = resolve_target(dsn, data_dir)

    result = as_operator(
        target.dsns.admin,
        workspace_id,
        "set_capabilities",
        {"capabilities": [{"cap_name": cap_name, "actor_kind": actor_kind, "granted": grant}]},
    )
    if json_out:
        print_json(result)
    else:
        out.print(
            f"{cap_name} {'granted to' if grant else 'denied to'} {actor_kind} "
            f"(event {result['event_id']})"
        )


# ---------------------------------------------------------------- token
#: The longest lifetime a token may be given (a century); longer is a typo, not a plan.
MAX_TOKEN_DAYS = 36_500


def _expiry(days: float | None) -> datetime | None:
    if days is None:
        return None
    if not math.isfinite(days) or not 0 < days <= MAX_TOKEN_DAYS:
        raise ConfigError(
            f"--expires-in-days must be more than 0 and at most {MAX_TOKEN_DAYS}, got {days!r}; "
            "leave it out for a token that never expires"
        )
    return datetime.now(UTC) + timedelta(days=days)


@token_app.command("issue")
@boundary
def token_issue(
    workspace_id: WorkspaceArg,
    actor_kind: Annotated[str, typer.Option(help="Actor kind the token acts as.")] = "kora",
    label: Annotated[str, typer.Option(help="A note to recognise the token by.")] = "",
    expires_in_days: Annotated[
        float | None,
        typer.Option(
            help=f"Expire after this many days (more than 0, at most {MAX_TOKEN_DAYS}); "
            "leave it out for a token that never expires.",
        ),
    ] = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Issue a service token. It is printed once; only its SHA-256 is stored."""
    expires = _expiry(expires_in_days)
    target = resolve_target(dsn, data_dir)

    async def go(conn: Any) -> writes.IssuedToken:
        operator = await _operator(conn, workspace_id)
        holder = await reads.actor_id_of_kind(conn, workspace_id, actor_kind)
        if holder is None:
            raise NotFoundError(f"workspace {workspace_id!r} has no active {actor_kind!r} actor")
        return await writes.issue_token(
            conn, workspace_id, operator, holder, label=label, expires_at=expires
        )

    issued = run_async(_with_conn(target.dsns.admin, go))
    if json_out:
        print_json(
            {
                "token": issued.token,
                "token_id": issued.token_id,
                "token_prefix": issued.token_prefix,
                "actor_kind": actor_kind,
                "expires_at": expires,
            }
        )
        return
    out.print(
        f"token for {actor_kind} in {workspace_id} (id {issued.token_id}) — "
        "store it now, it is not shown again:"
    )
    out.print(issued.token, markup=False)


@token_app.command("list")
@boundary
def token_list(
    workspace_id: WorkspaceArg,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """List tokens by public prefix and status (never the secret)."""
    target = resolve_target(dsn, data_dir)

    rows = read_workspace(target.dsns.admin, workspace_id, admin.list_tokens)
    if json_out:
        print_json(rows)
        return
    table = Table("token_id", "prefix", "actor", "label", "status", "expires")
    for r in rows:
        table.add_row(
            str(r["token_id"]),
            r["token_prefix"] + "…",
            r["actor_kind"],
            r["label"],
            r["status"],
            str(r["expires_at"] or "never"),
        )
    out.print(table)


@token_app.command("revoke")
@boundary
def token_revoke(
    workspace_id: WorkspaceArg,
    token: Annotated[str, typer.Argument(help="token_id, or the public prefix (wsk_ + 8 chars).")],
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Revoke a token; the gateway refuses it from then on."""
    target = resolve_target(dsn, data_dir)
    try:
        args: dict[str, Any] = {"token_id": str(UUID(token))}
    except ValueError:
        args = {"token_prefix": writes.token_public_prefix(token)}

    result = as_operator(target.dsns.admin, workspace_id, "revoke_token", args)
    if json_out:
        print_json(result)
    else:
        out.print(f"revoked {result['token_prefix']}… (event {result['event_id']})")


# ---------------------------------------------------------------- constitution
@constitution_app.command("show")
@boundary
def constitution_show(
    workspace_id: WorkspaceArg,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Print the active constitution revision and its rules."""
    target = resolve_target(dsn, data_dir)

    active = read_workspace(target.dsns.admin, workspace_id, reads.read_active_constitution)
    if active is None:
        raise NotFoundError(f"workspace {workspace_id!r} has no constitution revision yet")
    if json_out:
        print_json(
            {
                "revision_number": active.revision_number,
                "revision_id": active.revision_id,
                "rules_hash": active.rules_hash_hex,
                "rules": active.rules,
            }
        )
        return
    out.print(f"revision {active.revision_number} · rules_hash {active.rules_hash_hex}")
    for rule in active.rules.get("rules", []):
        out.print(
            f"  {rule.get('effect', '?'):<9} {rule.get('id', '?')}: {rule.get('description', '')}",
            markup=False,
        )


@constitution_app.command("set")
@boundary
def constitution_set(
    workspace_id: WorkspaceArg,
    file: Annotated[
        Path,
        typer.Argument(
            help="JSON file with the rules (format: docs/gateway.md).", exists=True, dir_okay=False
        ),
    ],
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add a constitution revision; the rules are compiled first, so a bad rule is refused."""
    try:
        rules = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not JSON: {exc}") from None
    if not isinstance(rules, dict):
        raise ConfigError(f"{file} must hold a JSON object with a rules list")
    Constitution.from_rules(rules)  # raises ConfigError naming the bad rule
    target = resolve_target(dsn, data_dir)

    result = as_operator(target.dsns.admin, workspace_id, "revise_constitution", {"rules": rules})
    if json_out:
        print_json(result)
    else:
        out.print(
            f"constitution revision {result['revision_number']} active "
            f"(rules_hash {result['rules_hash']}), event {result['event_id']}"
        )
