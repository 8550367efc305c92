"""The ``isokron`` command: a thin shell over the library (see README "CLI reference")."""

from __future__ import annotations

import logging
import os

import typer

from isokron import __version__
from isokron.cli import (
    agent_cmds,
    audit_cmds,
    console_cmds,
    lifecycle_cmds,
    log_cmds,
    outbox_cmds,
    substrate_cmds,
)
from isokron.cli.common import boundary

app = typer.Typer(
    name="isokron",
    help="IsoKron: a governed, tamper-evident memory substrate for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"isokron {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log INFO messages to stderr."),
) -> None:
    """IsoKron: a governed, tamper-evident memory substrate for AI agents."""
    level = (
        logging.INFO
        if verbose
        else getattr(
            logging, os.environ.get("ISOKRON_LOG_LEVEL", "WARNING").upper(), logging.WARNING
        )
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


app.command("up")(boundary(substrate_cmds.up))
app.command("down")(boundary(substrate_cmds.down))
app.add_typer(substrate_cmds.db_app, name="db")
app.add_typer(substrate_cmds.workspace_app, name="workspace")
app.add_typer(substrate_cmds.charter_app, name="charter")
app.add_typer(substrate_cmds.policy_app, name="policy")
app.add_typer(substrate_cmds.capability_app, name="capability")
app.add_typer(substrate_cmds.token_app, name="token")
app.add_typer(substrate_cmds.constitution_app, name="constitution")
app.add_typer(lifecycle_cmds.actor_app, name="actor")
app.command("maintain")(lifecycle_cmds.maintain)
app.command("verify")(audit_cmds.verify)
app.command("export")(audit_cmds.export)
app.command("checkpoint")(log_cmds.checkpoint)
app.add_typer(log_cmds.log_app, name="log")
app.add_typer(log_cmds.prove_app, name="prove")
app.command("verify-proof")(log_cmds.verify_proof)
app.add_typer(log_cmds.witness_app, name="witness")
app.command("serve")(agent_cmds.serve)
app.command("context")(agent_cmds.context)
app.command("demo")(agent_cmds.demo)
app.command("console")(console_cmds.console)
app.add_typer(agent_cmds.hermes_app, name="hermes")
app.add_typer(outbox_cmds.outbox_app, name="outbox")
app.add_typer(agent_cmds.proposal_app, name="proposal")
app.add_typer(agent_cmds.escalation_app, name="escalation")


def main() -> None:
    """Console-script entry point."""
    app()
