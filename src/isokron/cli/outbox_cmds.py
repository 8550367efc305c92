"""``isokron outbox status|flush``: the Hermes provider's durable outbox, for an operator.

The outbox is ``$HERMES_HOME/isokron/outbox.sqlite3`` (see docs/provider.md, "When PostgreSQL
or the gateway is down"). ``flush`` delivers with the same settings a Hermes session on that
home uses: ``isokron.json``, ``$HERMES_HOME/.env`` and the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isokron.cli.common import boundary, out, print_json

outbox_app = typer.Typer(
    help="The Hermes provider's durable outbox of writes.", no_args_is_help=True
)

HermesHomeOption = Annotated[
    Path | None,
    typer.Option(envvar="HERMES_HOME", help="Hermes home (default ~/.hermes).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DEFAULT_FLUSH_SECONDS = 60.0


def _home(hermes_home: Path | None) -> Path:
    return (hermes_home or Path.home() / ".hermes").expanduser()


@outbox_app.command("status")
@boundary
def outbox_status(hermes_home: HermesHomeOption = None, as_json: JsonOption = False) -> None:
    """What waits in the outbox (per workspace), totals delivered/refused, latest refusals."""
    from isokron.provider.outbox import outbox_path, read_status

    path = outbox_path(_home(hermes_home))
    status = read_status(path)  # read-only: a status never creates the outbox
    if status is None:
        if as_json:
            print_json({"path": str(path), "exists": False, "pending": 0})
        else:
            out.print(f"no outbox at {path} (nothing was ever queued there)")
        return
    if as_json:
        print_json(status)
        return
    out.print(f"outbox {status['path']}")
    out.print(
        f"  waiting: {status['pending']} write(s), {status['pending_bytes']} bytes "
        f"(bound {status['bound']['writes']} writes, {status['bound']['bytes']} bytes)"
    )
    out.print(
        f"  delivered: {status['delivered_total']} (of which replayed: "
        f"{status['replayed_total']}), refused: {status['refused_total']}"
    )
    for group in status["workspaces"]:
        out.print(
            f"  {group['workspace_id']}: {group['writes']} {group['status']}, oldest "
            f"{group['oldest_age_seconds']}s, attempts up to {group['max_attempts']}"
        )
    for refusal in status["recent_refusals"]:
        out.print(f"  refused #{refusal['id']} {refusal['what']}: {refusal['reason']}")


@outbox_app.command("flush")
@boundary
def outbox_flush(
    hermes_home: HermesHomeOption = None,
    budget: Annotated[
        float, typer.Option(help="Seconds to spend delivering at most.", min=1.0)
    ] = DEFAULT_FLUSH_SECONDS,
    as_json: JsonOption = False,
) -> None:
    """Deliver the waiting writes of the configured workspace now (exit 1 if some remain)."""
    from dotenv import load_dotenv

    from isokron.provider.config import load_config
    from isokron.provider.outbox import Outbox, outbox_path
    from isokron.provider.writes import deliver_outbox

    home = _home(hermes_home)
    load_dotenv(home / ".env", override=False)  # as Hermes does before it starts a provider
    config = load_config(home)
    if config.workspace_id is None:
        raise typer.BadParameter("no workspace configured: set ISOKRON_WORKSPACE_ID")
    outbox = Outbox(outbox_path(home))
    try:
        report = deliver_outbox(config, outbox, budget=budget, log_dir=home / "logs")
    finally:
        outbox.close()
    if as_json:
        print_json(report.to_dict())
    else:
        out.print(
            f"{report.workspace_id}: {report.delivered} delivered, "
            f"{report.waiting_after} still waiting (of {report.waiting_before})"
        )
    if report.waiting_after:
        raise typer.Exit(1)
