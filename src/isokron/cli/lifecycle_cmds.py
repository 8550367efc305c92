"""Commands for the life of a workspace's actors and records: actor list|disable|enable and
maintain. Every change is a governed, chained operation (``isokron.governance.operations``)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import typer
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
from isokron.cli.substrate_cmds import _with_conn, as_operator, read_workspace
from isokron.errors import ConfigError, NotFoundError
from isokron.substrate import connection, reads

MAINTAIN_SQL = "SELECT isokron_api.maintain($1)"

actor_app = typer.Typer(
    help="The workspace's actors: list them, disable or enable one.", no_args_is_help=True
)

ActorArg = Annotated[
    str, typer.Argument(help="Actor id, or an actor kind with one actor (e.g. kora).")
]
ReasonOption = Annotated[str | None, typer.Option(help="Why; recorded in the chained event.")]


@actor_app.command("list")
@boundary
def actor_list(
    workspace_id: WorkspaceArg,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the workspace's actors with their status."""
    target = resolve_target(dsn, data_dir)
    actors = read_workspace(target.dsns.admin, workspace_id, reads.read_actors)
    if json_out:
        print_json(actors)
        return
    table = Table("actor", "kind", "name", "status")
    for a in actors:
        table.add_row(str(a["actor_id"]), a["actor_kind"], a["display_name"], a["status"])
    out.print(table)


def _resolve_actor(actors: list[dict[str, Any]], given: str) -> dict[str, Any]:
    try:
        wanted = UUID(given)
    except ValueError:
        matches = [a for a in actors if a["actor_kind"] == given]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFoundError(f"no actor of kind {given!r} in this workspace") from None
        raise ConfigError(
            f"{len(matches)} actors are of kind {given!r}; name one by its id (isokron actor list)"
        ) from None
    for a in actors:
        if UUID(str(a["actor_id"])) == wanted:
            return a
    raise NotFoundError(f"no actor {wanted} in this workspace")


def _set_status(
    workspace_id: str,
    actor: str,
    status: str,
    reason: str | None,
    dsn: str | None,
    data_dir: Any,
    json_out: bool,
) -> None:
    target = resolve_target(dsn, data_dir)
    actors = read_workspace(target.dsns.admin, workspace_id, reads.read_actors)
    found = _resolve_actor(actors, actor)
    result = as_operator(
        target.dsns.admin,
        workspace_id,
        "set_actor_status",
        {"actor_id": str(found["actor_id"]), "status": status, "reason": reason},
    )
    if json_out:
        print_json(result)
    else:
        out.print(
            f"actor {found['actor_kind']} {found['actor_id']} is {status} "
            f"(event {result['event_id']})",
            markup=False,
        )


@actor_app.command("disable")
@boundary
def actor_disable(
    workspace_id: WorkspaceArg,
    actor: ActorArg,
    reason: ReasonOption = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Disable an actor: its calls are refused (actor_disabled); its tokens stay revocable."""
    _set_status(workspace_id, actor, "disabled", reason, dsn, data_dir, json_out)


@actor_app.command("enable")
@boundary
def actor_enable(
    workspace_id: WorkspaceArg,
    actor: ActorArg,
    reason: ReasonOption = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Enable a disabled actor again (its unrevoked tokens work again)."""
    _set_status(workspace_id, actor, "active", reason, dsn, data_dir, json_out)


@boundary
def maintain(
    workspace_id: Annotated[
        str | None, typer.Argument(help="Workspace id (default: every workspace).")
    ] = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Close what is overdue: escalations past their SLA and proposals past their expiry
    (expired), scratchpad entries past their retention (archived), each with a chained event;
    and delete idempotency keys past their TTL. The gateway also does this periodically."""
    target = resolve_target(dsn, data_dir)

    async def go(conn: Any) -> Any:
        return await connection.run(conn, MAINTAIN_SQL, workspace_id)

    result = run_async(_with_conn(target.dsns.admin, go))
    failed = [ws for ws in result["workspaces"] if "failed" in ws]
    if json_out:
        print_json(result)
        if failed:
            raise typer.Exit(1)
        return
    for ws in result["workspaces"]:
        if "failed" in ws:
            out.print(f"{ws['workspace_id']}: maintenance failed ({ws['failed']})", markup=False)
            continue
        if "skipped" in ws:
            out.print(f"{ws['workspace_id']}: skipped ({ws['skipped']})", markup=False)
            continue
        out.print(
            f"{ws['workspace_id']}: {ws['escalations_expired']} escalation(s) and "
            f"{ws['proposals_expired']} proposal(s) expired, {ws['scratchpad_archived']} "
            f"scratchpad entr(y/ies) archived, {ws['idempotency_keys_deleted']} idempotency "
            "key(s) deleted",
            markup=False,
        )
    if failed:
        raise typer.Exit(1)
