"""Transparency-log commands: log keys, signed checkpoints, proofs, offline proof checks and a
witness (docs/chain.md, "Transparency log")."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from isokron.chain.merkle import leaf_hash
from isokron.chain.note import ALG_COSIGNATURE_V1, Signer, Verifier, parse_note
from isokron.chain.tlog import (
    LogCheckpoint,
    check_witness_step,
    cosign,
    open_checkpoint,
    verify_proof_document,
)
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
from isokron.errors import ChainError, ConfigError, NotFoundError
from isokron.substrate import connection, log_keys, transparency
from isokron.substrate.database_errors import DRIVER_ERRORS, translate

log_app = typer.Typer(help="The workspace's transparency log.", no_args_is_help=True)
key_app = typer.Typer(help="The log's signing key.", no_args_is_help=True)
log_app.add_typer(key_app, name="key")
prove_app = typer.Typer(
    help="Inclusion and consistency proofs against signed checkpoints.", no_args_is_help=True
)
witness_app = typer.Typer(
    help="A witness: cosigns a log's checkpoints only if they extend what it saw before.",
    no_args_is_help=True,
)

KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="The log's private key file (default: the user config dir, or $ISOKRON_LOG_KEY_DIR).",
        show_default=False,
    ),
]
SignedOnlyOption = Annotated[
    bool,
    typer.Option(
        "--signed-only",
        help="Prove against checkpoints the log already signed (latest, or the given sizes): "
        "no private key needed, nothing new is signed.",
    ),
]
WitnessDirOption = Annotated[
    Path, typer.Option("--dir", help="The witness's folder: its key and the checkpoints it saw.")
]


async def _with_conn(dsn: str, fn: Any) -> Any:
    conn = await connection.connect(dsn)
    try:
        return await fn(conn)
    except DRIVER_ERRORS as exc:  # translated at this boundary (hostile input too)
        raise translate(exc) from exc
    finally:
        await conn.close()


def _key_path(conn_origin: str, key_file: Path | None) -> Path:
    if key_file is not None:
        return key_file
    _, workspace_id, tenant = conn_origin.split("/", 2)
    return log_keys.default_key_file(workspace_id, tenant)


async def _signer(conn: Any, workspace_id: str, key_file: Path | None) -> Signer:
    origin = await transparency.origin_of(conn, workspace_id)
    return log_keys.read_private_key(_key_path(origin, key_file))


# ---------------------------------------------------------------- keys
@key_app.command("init")
@boundary
def key_init(
    workspace_id: WorkspaceArg,
    key_file: KeyFileOption = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Make the log's Ed25519 key (idempotent): the private key goes to a 0600 file, the public
    verifier key into the database. Prints the verifier key auditors use."""
    target = resolve_target(dsn, data_dir)

    async def go(conn: Any) -> tuple[Verifier, Path, bool]:
        origin = await transparency.origin_of(conn, workspace_id)
        path = _key_path(origin, key_file)
        registered = await transparency.registered_key(conn, workspace_id)
        made = not path.exists()
        if made:
            if registered is not None:
                raise ConfigError(
                    f"the log already has key {registered.encode()}, but its private key is "
                    f"not at {path}; give --key-file"
                )
            log_keys.write_private_key(path, Signer.generate(origin))
        signer = log_keys.read_private_key(path)
        if signer.name != origin:
            raise ConfigError(f"{path} holds the key of {signer.name!r}, not of {origin!r}")
        await transparency.register_key(conn, workspace_id, signer.verifier())
        return signer.verifier(), path, made

    verifier, path, made = run_async(_with_conn(target.dsns.admin, go))
    out.print(f"{'created' if made else 'kept'} the log key of {workspace_id} ({path})")
    typer.echo(verifier.encode())


@key_app.command("show")
@boundary
def key_show(
    workspace_id: WorkspaceArg,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Print the log's verifier key (NAME+KEYHASH+BASE64) for auditors and witnesses."""
    target = resolve_target(dsn, data_dir)
    key = run_async(
        _with_conn(target.dsns.admin, lambda c: transparency.registered_key(c, workspace_id))
    )
    if key is None:
        raise NotFoundError(f"no log key yet; run `isokron log key init {workspace_id}`")
    if json_out:
        print_json({"workspace_id": workspace_id, "origin": key.name, "verifier_key": key.encode()})
    else:
        typer.echo(key.encode())


# ---------------------------------------------------------------- checkpoint
@boundary
def checkpoint(
    workspace_id: Annotated[str, typer.Argument(help="Workspace whose log to checkpoint.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="File to write ('-' for stdout).")
    ] = Path("-"),
    key_file: KeyFileOption = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Sign the log's current tree head as a C2SP checkpoint (signed note) to keep outside.

    `isokron verify WORKSPACE --against FILE --key VERIFIER_KEY` then catches any rewrite,
    truncation or fork of the chain up to that size.
    """
    target = resolve_target(dsn, data_dir)

    async def go(conn: Any) -> transparency.StoredCheckpoint:
        signer = await _signer(conn, workspace_id, key_file)
        return await transparency.sign_tree(conn, workspace_id, signer)

    cp = run_async(_with_conn(target.dsns.admin, go))
    if str(output) == "-":
        typer.echo(cp.note, nl=False)
    else:
        output.write_text(cp.note, encoding="utf-8")
        out.print(f"checkpoint of {workspace_id} at tree size {cp.tree_size} written to {output}")


# ---------------------------------------------------------------- prove
@prove_app.command("inclusion")
@boundary
def prove_inclusion(
    workspace_id: WorkspaceArg,
    seq: Annotated[int, typer.Option("--seq", help="The event's seq (leaf index = seq - 1).")],
    key_file: KeyFileOption = None,
    signed_only: SignedOnlyOption = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Prove event SEQ is in the log: audit path plus a freshly signed checkpoint (or, with
    --signed-only, the latest one the log signed)."""
    target = resolve_target(dsn, data_dir)

    async def go(conn: Any) -> dict[str, Any]:
        if signed_only:
            cp = await transparency.latest_checkpoint(conn, workspace_id)
        else:
            signer = await _signer(conn, workspace_id, key_file)
            cp = await transparency.sign_tree(conn, workspace_id, signer)
        return await transparency.prove_inclusion(conn, workspace_id, seq, cp)

    proof = run_async(_with_conn(target.dsns.admin, go))
    if json_out:
        print_json(proof)
    else:
        out.print(
            f"seq {seq} is leaf {proof['leaf_index']} of tree size {proof['tree_size']}; "
            f"audit path of {len(proof['audit_path'])} hashes (--json for the proof file)"
        )


@prove_app.command("consistency")
@boundary
def prove_consistency(
    workspace_id: WorkspaceArg,
    first: Annotated[int, typer.Option("--from", help="The earlier tree size.")],
    second: Annotated[int, typer.Option("--to", help="The later tree size.")],
    key_file: KeyFileOption = None,
    signed_only: SignedOnlyOption = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Prove tree size TO extends tree size FROM, with both checkpoints signed (with
    --signed-only: both must be checkpoints the log already signed)."""
    target = resolve_target(dsn, data_dir)

    async def go(conn: Any) -> dict[str, Any]:
        if signed_only:
            one = await transparency.stored_checkpoint(conn, workspace_id, first)
            two = await transparency.stored_checkpoint(conn, workspace_id, second)
            if one is None or two is None:
                raise NotFoundError(
                    f"the log signed no checkpoint at tree size {first if one is None else second}"
                )
        else:
            signer = await _signer(conn, workspace_id, key_file)
            one = await transparency.sign_tree(conn, workspace_id, signer, size=first)
            two = await transparency.sign_tree(conn, workspace_id, signer, size=second)
        return await transparency.prove_consistency(conn, workspace_id, one, two)

    proof = run_async(_with_conn(target.dsns.admin, go))
    if json_out:
        print_json(proof)
    else:
        out.print(
            f"tree size {second} extends size {first}: consistency path of "
            f"{len(proof['consistency_path'])} hashes (--json for the proof file)"
        )


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ChainError(f"{what} {path} is not JSON: {exc}") from None


@boundary
def verify_proof(
    file: Annotated[
        Path,
        typer.Argument(
            help="Proof file from `isokron prove … --json`.", dir_okay=False, exists=True
        ),
    ],
    key: Annotated[str, typer.Option("--key", help="The log's verifier key (log key show).")],
    event_hash: Annotated[
        str | None,
        typer.Option(
            "--event-hash",
            help="The event's this_event_hash (hex): the inclusion proof must be for it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check an inclusion or consistency proof offline, with nothing but the file and the key."""
    doc = _read_json(file, "proof file")
    verdict = verify_proof_document(doc, Verifier.parse(key))
    if event_hash is not None:
        try:
            expected = leaf_hash(bytes.fromhex(event_hash)).hex()
        except ValueError:
            raise ConfigError("--event-hash takes 64 hex digits") from None
        if not isinstance(doc, dict) or doc.get("leaf_hash") != expected:
            raise ChainError("the proof is not for that event: its leaf hash differs")
        verdict += f", and its leaf is the event {event_hash[:16]}…"
    out.print(verdict, markup=False)


# ---------------------------------------------------------------- witness
def _witness_key(directory: Path) -> Path:
    return directory / "witness.key"


@witness_app.command("init")
@boundary
def witness_init(
    name: Annotated[str, typer.Argument(help="The witness's name, e.g. witness.example/w1.")],
    directory: WitnessDirOption,
) -> None:
    """Make the witness's cosigning key (idempotent) and print its verifier key."""
    path = _witness_key(directory)
    if not path.exists():
        log_keys.write_private_key(path, Signer.generate(name, ALG_COSIGNATURE_V1))
    signer = log_keys.read_private_key(path)
    if signer.name != name or signer.alg != ALG_COSIGNATURE_V1:
        raise ConfigError(f"{path} holds another key ({signer.name!r})")
    typer.echo(signer.verifier().encode())


def _seen_path(directory: Path, origin: str) -> Path:
    return directory / "seen" / (hashlib.sha256(origin.encode()).hexdigest()[:32] + ".checkpoint")


@witness_app.command("cosign")
@boundary
def witness_cosign(
    file: Annotated[Path, typer.Argument(help="Signed checkpoint to cosign.", dir_okay=False)],
    log_key: Annotated[str, typer.Option("--log-key", help="The log's verifier key.")],
    directory: WitnessDirOption,
    proof: Annotated[
        Path | None,
        typer.Option(
            "--proof",
            help="Consistency proof (prove consistency --json) from the last size cosigned.",
            dir_okay=False,
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the cosigned checkpoint.")
    ] = Path("-"),
) -> None:
    """Cosign a checkpoint only if it is consistent with the last one this witness cosigned.

    A checkpoint of the same size with another root, or a smaller one, is a fork and refused.
    """
    signer = log_keys.read_private_key(_witness_key(directory))
    checkpoint, note = open_checkpoint(file.read_bytes(), Verifier.parse(log_key))
    seen_file = _seen_path(directory, checkpoint.origin)
    seen = None
    if seen_file.exists():
        seen = LogCheckpoint.parse_body(parse_note(seen_file.read_bytes()).text)
    path = None
    if proof is not None and seen is not None and seen.tree_size != checkpoint.tree_size:
        doc = _read_json(proof, "proof file")
        if not isinstance(doc, dict) or (doc.get("first"), doc.get("second")) != (
            seen.tree_size,
            checkpoint.tree_size,
        ):
            raise ChainError(
                f"the proof must go from size {seen.tree_size} to {checkpoint.tree_size}"
            )
        path = [bytes.fromhex(h) for h in doc.get("consistency_path", [])]
    check_witness_step(seen, checkpoint, path)
    cosigned = note.with_signature(cosign(note, signer, int(time.time()))).encode()
    seen_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = seen_file.with_suffix(".tmp")
    tmp.write_text(cosigned, encoding="utf-8")
    tmp.replace(seen_file)
    if str(output) == "-":
        typer.echo(cosigned, nl=False)
    else:
        output.write_text(cosigned, encoding="utf-8")
        out.print(f"cosigned {checkpoint.origin} at tree size {checkpoint.tree_size}: {output}")
