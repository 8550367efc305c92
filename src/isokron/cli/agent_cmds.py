"""Commands around agents: serve the gateway, show an agent's context, run the demo, install
the Hermes plugin, and decide proposals and escalations."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal
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
from isokron.governance.redaction import redact_secrets
from isokron.governance.vocabulary import ESCALATION_STATUSES, PROPOSAL_STATUSES
from isokron.substrate import admin, reads

hermes_app = typer.Typer(help="Hermes Agent integration.", no_args_is_help=True)
proposal_app = typer.Typer(help="Convention and policy-change proposals.", no_args_is_help=True)
escalation_app = typer.Typer(help="The escalation queue.", no_args_is_help=True)


@boundary
def serve(
    transport: Annotated[
        str,
        typer.Option(
            help="stdio (token from KORA_SERVICE_TOKEN) or http (Authorization: Bearer wsk_…)."
        ),
    ] = "stdio",
    host: Annotated[str, typer.Option(help="HTTP bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.", min=1, max=65535)] = 8765,
    governance_ttl: Annotated[
        float,
        typer.Option(
            help="Seconds policies/capabilities/constitution are "
            "cached (how long a change may take to apply).",
            min=0,
        ),
    ] = 1.0,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Serve the MCP write gateway (the only way agents write)."""
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport must be stdio or http, not {transport!r}")
    from isokron.gateway import GatewaySettings, run_gateway

    target = resolve_target(dsn, data_dir)
    mode: Literal["stdio", "http"] = "http" if transport == "http" else "stdio"
    if mode == "http":
        typer.echo(f"IsoKron gateway on http://{host}:{port}/mcp (health: /healthz)", err=True)
    run_gateway(
        GatewaySettings(
            reader_dsn=target.dsns.reader,
            gateway_dsn=target.dsns.gateway,
            transport=mode,
            host=host,
            port=port,
            governance_ttl_seconds=governance_ttl,
            stdio_token=os.environ.get("KORA_SERVICE_TOKEN"),
        )
    )


@boundary
def context(
    workspace_id: WorkspaceArg,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Print the prompt block an agent of WORKSPACE starts from (--json: the session context)."""
    from isokron.provider.context import render_context

    target = resolve_target(dsn, data_dir)
    run_async(_with_conn(target.dsns.admin, admin.require_workspace, workspace_id))
    block, ctx = render_context(target.dsns.reader, workspace_id)
    if json_out:
        print_json(ctx)
    else:
        out.print(block, markup=False)


@boundary
def demo(
    workspace: Annotated[
        str, typer.Option(help="Workspace to run the session in (created if missing).")
    ] = "demo",
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run a scripted agent session (no LLM) through the real provider and gateway, then verify."""
    from isokron.cli.substrate_cmds import _ensure_workspace, _migrate
    from isokron.provider.demo import run_demo
    from isokron.substrate import audit

    target = resolve_target(dsn, data_dir)
    _migrate(target.dsns.admin, quiet=True)
    run_async(_ensure_workspace(target.dsns.admin, workspace, "Demo workspace"))
    with out.status("running the demo session…") as status:
        report = run_demo(target.dsns, workspace, progress=lambda m: status.update(m))
    result = audit.verify_workspace(target.dsns.admin, workspace)
    if json_out:
        print_json({"demo": _as_dict(report), "verify": result.to_dict()})
    else:
        out.print(str(report), markup=False)
        verdict = "[green]verified[/]" if result.ok else "[red]NOT verified[/]"
        out.print(f"chain of {workspace}: {verdict} ({result.chain.events_checked} events)")
    if not result.ok:
        raise typer.Exit(1)


def _as_dict(report: Any) -> Any:
    to_dict = getattr(report, "to_dict", None)
    return to_dict() if callable(to_dict) else str(report)


@hermes_app.command("install")
@boundary
def hermes_install(
    hermes_home: Annotated[
        Path | None,
        typer.Option(
            envvar="HERMES_HOME", help="Hermes home (default ~/.hermes).", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing plugin folder.")] = False,
) -> None:
    """Write $HERMES_HOME/plugins/isokron/ so Hermes Agent 0.19 discovers the provider."""
    from isokron.provider.install import install_hermes_plugin

    home = (hermes_home or Path.home() / ".hermes").expanduser()
    path = install_hermes_plugin(home, force=force)
    out.print(f"installed the IsoKron memory provider plugin in {path}")
    out.print("select it in config.yaml:  memory:\n    provider: isokron")


# ---------------------------------------------------------------- proposals and escalations
@proposal_app.command("list")
@boundary
def proposal_list(
    workspace_id: WorkspaceArg,
    status: Annotated[
        str, typer.Option(help=f"{', '.join(PROPOSAL_STATUSES)} or all.")
    ] = "pending",
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """List proposals."""
    target = resolve_target(dsn, data_dir)

    rows = read_workspace(
        target.dsns.admin,
        workspace_id,
        reads.read_proposals,
        status=None if status == "all" else status,
    )
    if json_out:
        print_json([_slots(r) for r in rows])
        return
    table = Table("proposal_id", "kind", "title", "status", "created")
    for r in rows:
        table.add_row(str(r.proposal_id), r.proposal_kind, r.title, r.status, str(r.created_at))
    out.print(table)


@proposal_app.command("decide")
@boundary
def proposal_decide(
    workspace_id: WorkspaceArg,
    proposal_id: Annotated[str, typer.Argument(help="The proposal's id.")],
    decision: Annotated[str, typer.Argument(help="accept or reject.")],
    kind: Annotated[str, typer.Option(help="convention or policy_change.")] = "convention",
    note: Annotated[str, typer.Option(help="Why.")] = "",
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Accept or reject a proposal (an accepted policy change takes effect at once)."""
    verdict = {"accept": "accepted", "reject": "rejected"}.get(decision)
    if verdict is None:
        raise ConfigError("decision must be accept or reject")
    target = resolve_target(dsn, data_dir)

    result = as_operator(
        target.dsns.admin,
        workspace_id,
        "decide_proposal",
        {
            "proposal_kind": kind,
            "proposal_id": str(UUID(proposal_id)),
            "decision": verdict,
            "note": note,
        },
    )
    print_json(result) if json_out else out.print(
        f"proposal {proposal_id} {verdict} (event {result['event_id']})"
    )


@escalation_app.command("list")
@boundary
def escalation_list(
    workspace_id: WorkspaceArg,
    status: Annotated[str, typer.Option(help=f"{', '.join(ESCALATION_STATUSES)} or all.")] = "open",
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """List escalations with the operation each one holds (secrets redacted)."""
    target = resolve_target(dsn, data_dir)

    rows = read_workspace(
        target.dsns.admin,
        workspace_id,
        reads.read_held_escalations,
        status=None if status == "all" else status,
    )
    if json_out:
        print_json([_held_json(r) for r in rows])
        return
    table = Table("escalation_id", "raised by", "held operation", "reason", "status")
    for r in rows:
        held = _held_text(r["request"])
        if len(held) > HELD_PREVIEW_CHARS:
            held = held[: HELD_PREVIEW_CHARS - 1] + "…"
        table.add_row(
            str(r["escalation_id"]), r["actor_kind"] or "?", held, r["reason"], r["status"]
        )
    out.print(table)


@escalation_app.command("show")
@boundary
def escalation_show(
    workspace_id: WorkspaceArg,
    escalation_id: Annotated[str, typer.Argument(help="The escalation's id.")],
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one escalation: who raised it, why, and the held operation with its arguments
    (secrets redacted)."""
    target = resolve_target(dsn, data_dir)
    try:
        wanted = UUID(escalation_id)
    except ValueError:
        raise ConfigError(f"{escalation_id!r} is not an escalation id (a UUID)") from None
    rows = read_workspace(
        target.dsns.admin,
        workspace_id,
        reads.read_held_escalations,
        status=None,
        escalation_id=wanted,
        limit=1,
    )
    if not rows:
        raise NotFoundError(f"no escalation {escalation_id} in workspace {workspace_id!r}")
    held = _held_json(rows[0])
    if json_out:
        print_json(held)
        return
    for key in ("escalation_id", "status", "raised_by", "tool", "rule_id", "reason"):
        out.print(f"{key:<15} {held[key] if held[key] is not None else ''}")
    out.print(f"{'held operation':<15} {held['held']['op'] or '(none)'}")
    out.print(json.dumps(held["held"]["args"], indent=2, ensure_ascii=False, default=str))


HELD_PREVIEW_CHARS = 80


def _redacted(value: Any) -> Any:
    """``value`` with every secret-shaped string replaced (the constitution's redactor)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    cleaned = redact_secrets(text)
    try:
        return json.loads(cleaned)
    except ValueError:
        return cleaned


def _held_text(request: Any) -> str:
    request = request if isinstance(request, dict) else {}
    args = json.dumps(_redacted(request.get("args", {})), ensure_ascii=False, default=str)
    return f"{request.get('op') or '(none)'} {args}"


def _held_json(row: dict[str, Any]) -> dict[str, Any]:
    request = row["request"] if isinstance(row["request"], dict) else {}
    return {
        "escalation_id": str(row["escalation_id"]),
        "status": row["status"],
        "raised_by": row["actor_kind"],
        "actor_id": str(row["actor_id"]),
        "tool": row["tool"],
        "rule_id": row["rule_id"],
        "reason": row["reason"],
        "created_at": str(row["created_at"]),
        "decided_at": None if row["decided_at"] is None else str(row["decided_at"]),
        "held": {"op": request.get("op"), "args": _redacted(request.get("args", {}))},
    }


@escalation_app.command("decide")
@boundary
def escalation_decide(
    workspace_id: WorkspaceArg,
    escalation_id: Annotated[str, typer.Argument(help="The escalation's id.")],
    decision: Annotated[str, typer.Argument(help="approve (performs the held write) or reject.")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
    override: Annotated[
        bool,
        typer.Option(
            "--override",
            help="If the actor who raised it no longer holds the capability, perform the held "
            "write as the operator instead (the chain records the override).",
        ),
    ] = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Approve or reject an escalation; approving performs the held write as the actor who
    raised it, if that actor holds the operation's capability now."""
    verdict = {"approve": "approved", "reject": "rejected"}.get(decision)
    if verdict is None:
        raise ConfigError("decision must be approve or reject")
    target = resolve_target(dsn, data_dir)

    result = as_operator(
        target.dsns.admin,
        workspace_id,
        "decide_escalation",
        {
            "escalation_id": str(UUID(escalation_id)),
            "decision": verdict,
            "note": note,
            "override": override,
        },
    )
    print_json(result) if json_out else out.print(
        f"escalation {escalation_id} {verdict} (event {result['event_id']})"
    )


def _slots(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in getattr(obj, "__slots__", ())}
