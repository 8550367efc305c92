"""Commands for auditors: verify (online or from a bundle) and export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isokron.chain import Finding, VerifyReport, read_bundle, verify_bundle
from isokron.chain.merkle import leaf_hash
from isokron.chain.note import Verifier
from isokron.chain.tlog import LogCheckpoint, open_checkpoint, verified_cosigners
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
from isokron.substrate.tree_audit import checkpoint_findings_from_leaves, verify_workspace_tree

AgainstOption = Annotated[
    Path | None,
    typer.Option(
        "--against",
        help="Signed checkpoint (from `isokron checkpoint`) the chain must extend.",
        exists=True,
        dir_okay=False,
        show_default=False,
    ),
]


KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="The log's verifier key (`isokron log key show`); required with --against.",
        show_default=False,
    ),
]
WitnessOption = Annotated[
    list[str] | None,
    typer.Option(
        "--witness",
        help="A witness's verifier key whose cosignature the checkpoint must carry "
        "(repeat for several; see --quorum).",
        show_default=False,
    ),
]
QuorumOption = Annotated[
    int | None,
    typer.Option(
        "--quorum",
        min=1,
        help="How many of the --witness keys must have cosigned (default: all of them).",
        show_default=False,
    ),
]


def _load_checkpoint(
    path: Path | None, key: str | None, witnesses: list[str], quorum: int | None
) -> LogCheckpoint | None:
    """The signed checkpoint of --against, its log signature and k-of-n cosignatures checked."""
    if path is None:
        if key or witnesses or quorum:
            raise ConfigError("--key, --witness and --quorum go with --against FILE")
        return None
    if not key:
        raise ConfigError("--against needs --key VERIFIER_KEY (from `isokron log key show`)")
    try:
        checkpoint, note = open_checkpoint(path.read_bytes(), Verifier.parse(key))
    except ChainError as exc:
        raise ChainError(f"checkpoint file {path} refused: {exc}") from None
    need = len(witnesses) if quorum is None else quorum
    if need > len(witnesses):
        raise ConfigError(f"--quorum {need} needs at least {need} --witness keys")
    if need:
        cosigned = verified_cosigners(note, [Verifier.parse(w) for w in witnesses])
        if len(cosigned) < need:
            raise ChainError(
                f"checkpoint file {path} refused: {len(cosigned)} of the {len(witnesses)} "
                f"named witnesses cosigned it, {need} required"
            )
    return checkpoint


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
    key: KeyOption = None,
    witness: WitnessOption = None,
    quorum: QuorumOption = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Re-compute the hash chain and the Merkle tree, prove every state row against the event
    that last recorded it (and the charter, scratchpad and constitution hashes), and check a
    signed checkpoint (--against) with its witnesses.

    Exits 1 and names the problems (a broken link, a gap in seq, a fork, an edited payload, an
    unchained erasure, a row changed, deleted or inserted outside the write operations: table,
    key and columns; a tree node or checkpoint root that differs) when anything does not verify.
    """
    _verify(
        workspace_id, bundle, (against, key, list(witness or []), quorum), dsn, data_dir, json_out
    )


# What the status line says in each phase of the row and state checks (chain.state.RowProgress).
ROW_STATUS = {
    "scratchpad": "checking scratchpad contents… {n:,} entries",
    "records": "reading the chain's row records… {n:,} events",
    "rows": "checking state rows… {n:,} rows",
}


def row_status(phase: str, n: int) -> str:
    """The status line for a phase of the row and state checks and its running count."""
    return ROW_STATUS.get(phase, "checking rows… {n:,}").format(n=n)


@boundary
def _verify(
    workspace_id: str | None,
    bundle: Path | None,
    against_args: tuple[Path | None, str | None, list[str], int | None],
    dsn: str | None,
    data_dir: Path | None,
    json_out: bool,
) -> None:
    against = _load_checkpoint(*against_args)
    checkpoints = [] if against is None else [against]
    rows: int | None = None  # state rows proven (in the database; a bundle's are in its report)
    if (workspace_id is None) == (bundle is None):
        raise ConfigError("give either a WORKSPACE to verify in the database or --bundle FILE")
    if bundle is not None:
        with out.status("verifying…") as status:
            report = verify_bundle(
                bundle,
                progress=lambda n: status.update(f"verifying… {n:,} events"),
                row_progress=lambda phase, n: status.update(row_status(phase, n)),
            )
            extra: list[Finding] = []
            if checkpoints:  # the Merkle tree is re-derived only to confirm a checkpoint
                status.update("re-deriving the Merkle tree…")
                _, records = read_bundle(bundle)
                extra = checkpoint_findings_from_leaves(
                    (leaf_hash(r.this_event_hash) for r in records), checkpoints
                )
        ok = report.ok and not extra
        data = {
            "bundle": str(bundle),
            "ok": ok,
            "chain": report.to_dict(),
            "findings": [f.to_dict() for f in extra],
        }
        findings = list(report.problems) + extra
    else:
        assert workspace_id is not None
        target = resolve_target(dsn, data_dir)
        with out.status("verifying…") as status:
            result = audit.verify_workspace(
                target.dsns.admin,
                workspace_id,
                progress=lambda n: status.update(f"verifying… {n:,} events"),
                row_progress=lambda phase, n: status.update(row_status(phase, n)),
            )
            status.update("re-deriving the Merkle tree…")
            extra = verify_workspace_tree(target.dsns.admin, workspace_id, checkpoints)
        report, ok = result.chain, result.ok and not extra
        findings = list(report.problems) + list(result.findings) + extra
        data = {
            **result.to_dict(),
            "ok": ok,
            "findings": [f.to_dict() for f in (*result.findings, *extra)],
        }
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
    """Export the workspace's chain as a bundle anyone can verify (docs/chain.md §6)."""
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
