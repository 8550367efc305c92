"""Commands for auditors: verify (online or from a bundle), export, checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from isokron.chain import Checkpoint, VerifyReport, verify_bundle
from isokron.cli.common import (
    DataDirOption,
    DsnOption,
    JsonOption,
    boundary,
    err,
    out,
    print_json,
    resolve_target,
)
from isokron.errors import ChainError, ConfigError
from isokron.substrate import audit

AgainstOption = Annotated[
    Path | None,
    typer.Option(
        "--against",
        help="Checkpoint file (from `isokron checkpoint`) the chain must contain.",
        exists=True,
        dir_okay=False,
        show_default=False,
    ),
]


def _load_checkpoints(path: Path | None) -> list[Checkpoint]:
    if path is None:
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ChainError(f"checkpoint file {path} is not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    return [Checkpoint.from_dict(item) for item in items]


def verify(
    workspace_id: Annotated[
        str | None, typer.Argument(help="Workspace to verify in the database.", show_default=False)
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Verify an exported bundle file instead, using nothing but the file.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    against: AgainstOption = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Re-compute the hash chain and prove every state row against the event that last
    recorded it (and the charter, scratchpad and constitution hashes).

    Exits 1 and names the problems (a broken link, a gap in seq, a fork, an edited payload, an
    unchained erasure, a row changed, deleted or inserted outside the write operations: table,
    key and columns) when anything does not verify.
    """
    _verify(workspace_id, bundle, against, dsn, data_dir, json_out)


@boundary
def _verify(
    workspace_id: str | None,
    bundle: Path | None,
    against: Path | None,
    dsn: str | None,
    data_dir: Path | None,
    json_out: bool,
) -> None:
    checkpoints = _load_checkpoints(against)
    rows: int | None = None  # state rows proven (in the database; a bundle's are in its report)
    if (workspace_id is None) == (bundle is None):
        raise ConfigError("give either a WORKSPACE to verify in the database or --bundle FILE")
    if bundle is not None:
        report = verify_bundle(bundle, checkpoints)
        ok, data = report.ok, {"bundle": str(bundle), "ok": report.ok, "chain": report.to_dict()}
        findings = list(report.problems)
    else:
        assert workspace_id is not None
        target = resolve_target(dsn, data_dir)
        with out.status("verifying…") as status:
            result = audit.verify_workspace(
                target.dsns.admin,
                workspace_id,
                checkpoints=checkpoints,
                progress=lambda n: status.update(f"verifying… {n:,} events"),
            )
        report, ok, data = result.chain, result.ok, result.to_dict()
        findings = list(report.problems) + list(result.findings)
        rows = result.rows_checked
    if json_out:
        print_json(data)
    else:
        _print_report(report, findings, ok, len(checkpoints), rows)
    if not ok:
        raise typer.Exit(1)


def _print_report(
    report: VerifyReport, findings: list, ok: bool, n_checkpoints: int, rows: int | None = None
) -> None:
    head = (
        f"seq {report.head_seq}, head {report.head_hash.hex()[:16]}…"
        if report.head_hash
        else "empty chain"
    )
    if ok:
        extra = f", {n_checkpoints} checkpoint(s) confirmed" if n_checkpoints else ""
        if rows is not None:
            extra += f", {rows:,} state rows proven"
        out.print(f"[green]verified[/]: {report.events_checked:,} events ({head}){extra}")
        return
    err.print(
        f"[red]NOT verified[/]: {report.events_checked:,} events checked, "
        f"{len(findings)} problem(s)"
    )
    for f in findings[:20]:
        err.print(f"  {f.kind}: {f.message}", markup=False)


@boundary
def export(
    workspace_id: Annotated[str, typer.Argument(help="Workspace to export.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Bundle file to write ('-' for stdout).")
    ] = Path("-"),
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Export the workspace's chain as a JSON Lines bundle anyone can verify (docs/chain.md)."""
    target = resolve_target(dsn, data_dir)
    to_stdout = str(output) == "-"
    if to_stdout:
        audit.export_workspace(target.dsns.admin, workspace_id, "-")
        return
    with out.status("exporting…") as status:
        header = audit.export_workspace(
            target.dsns.admin,
            workspace_id,
            output,
            progress=lambda n: status.update(f"exporting… {n:,} events"),
        )
    out.print(f"exported {header.event_count:,} events of {workspace_id} to {output}")


@boundary
def checkpoint(
    workspace_id: Annotated[str, typer.Argument(help="Workspace whose chain head to record.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="File to write ('-' for stdout).")
    ] = Path("-"),
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Record the chain head (seq and hash) to keep outside the database.

    `isokron verify --against FILE` then catches even a consistent rewrite of the chain.
    """
    target = resolve_target(dsn, data_dir)
    cp = audit.make_checkpoint(target.dsns.admin, workspace_id)
    text = json.dumps({"workspace_id": workspace_id, **cp.to_dict()}, indent=2) + "\n"
    if str(output) == "-":
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(f"checkpoint of {workspace_id} at seq {cp.seq} written to {output}")
