"""``isokron console``: serve the operator console on this machine."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from isokron.cli.common import DataDirOption, DsnOption, boundary, resolve_target
from isokron.errors import ConfigError

LOOPBACK_NAMES = ("localhost",)


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@boundary
def console(
    host: Annotated[str, typer.Option(help="Bind address (loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8770,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Auditor mode: every change is refused.")
    ] = False,
    base_path: Annotated[
        str, typer.Option(help="URL prefix when served behind a reverse proxy, e.g. /isokron.")
    ] = "",
    gateway_url: Annotated[
        str, typer.Option(help="Gateway base URL for the 'Gateway reachable' gate ('' : none).")
    ] = "http://127.0.0.1:8765",
    hermes_home: Annotated[
        Path | None,
        typer.Option(
            envvar="HERMES_HOME",
            help="Hermes home whose provider outbox the 'Outbox empty' gate reads.",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the console keeps checkpoints (default: user data dir).", file_okay=False
        ),
    ] = None,
    secure_cookies: Annotated[
        bool,
        typer.Option("--secure-cookies", help="Mark the session cookie Secure (behind TLS)."),
    ] = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Serve the operator console (sign in with an operator token; see docs/console.md)."""
    if not _loopback(host):
        raise ConfigError(
            f"--host {host} is not a loopback address; the console serves 127.0.0.1 only "
            "(put a reverse proxy with TLS in front of it and use --base-path)"
        )
    import uvicorn

    from isokron.console import ConsoleSettings, create_app

    target = resolve_target(dsn, data_dir)
    settings = ConsoleSettings(
        dsns=target.dsns,
        read_only=read_only,
        base_path=base_path,
        gateway_url=gateway_url or None,
        hermes_home=hermes_home,
        state_dir=state_dir,
        secure_cookies=secure_cookies,
        check_host=not base_path,  # behind a proxy the Host is the public name
    )
    shown = settings.normalized_base_path()
    mode = " (read-only)" if read_only else ""
    typer.echo(f"IsoKron console{mode} on http://{host}:{port}{shown}/", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_level="warning")
