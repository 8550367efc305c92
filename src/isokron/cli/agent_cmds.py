"""Commands around agents: serve the gateway, show an agent's context, run the demo, install
the Hermes plugin, and decide proposals and escalations."""

from __future__ import annotations

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
from isokron.errors import ConfigError
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
    """Write $HERMES_HOME/plugins/isokron/: the memory provider and the dashboard console tab."""
    from isokron.provider.install import install_hermes_plugin

    home = (hermes_home or Path.home() / ".hermes").expanduser()
    path = install_hermes_plugin(home, force=force)
    out.print(f"installed the IsoKron memory provider plugin in {path}")
    out.print("select it in config.yaml:  memory:\n    provider: isokron")
    out.print(
        f"the console tab is in {path / 'dashboard'}; enable it with `hermes plugins enable "
        "isokron` (plugins.enabled in config.yaml) and open `hermes dashboard`"
    )


# ---------------------------------------------------------------- proposals and escalations
@proposal_app.command("list")
@boundary
def proposal_list(
    workspace_id: WorkspaceArg,
    status: Annotated[str, typer.Option(help="pending, accepted, rejected or all.")] = "pending",
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
    status: Annotated[str, typer.Option(help="open, approved, rejected or all.")] = "open",
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """List escalations."""
    target = resolve_target(dsn, data_dir)

    rows = read_workspace(
        target.dsns.admin,
        workspace_id,
        reads.read_escalation_queue,
        status=None if status == "all" else status,
    )
    if json_out:
        print_json([_slots(r) for r in rows])
        return
    table = Table("escalation_id", "tool", "rule", "reason", "status")
    for r in rows:
        table.add_row(str(r.escalation_id), r.tool, r.rule_id or "", r.reason, r.status)
    out.print(table)


@escalation_app.command("decide")
@boundary
def escalation_decide(
    workspace_id: WorkspaceArg,
    escalation_id: Annotated[str, typer.Argument(help="The escalation's id.")],
    decision: Annotated[str, typer.Argument(help="approve (performs the held write) or reject.")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Approve or reject an escalation; approving performs the held write."""
    verdict = {"approve": "approved", "reject": "rejected"}.get(decision)
    if verdict is None:
        raise ConfigError("decision must be approve or reject")
    target = resolve_target(dsn, data_dir)

    result = as_operator(
        target.dsns.admin,
        workspace_id,
        "decide_escalation",
        {"escalation_id": str(UUID(escalation_id)), "decision": verdict, "note": note},
    )
    print_json(result) if json_out else out.print(
        f"escalation {escalation_id} {verdict} (event {result['event_id']})"
    )


def _slots(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in getattr(obj, "__slots__", ())}
