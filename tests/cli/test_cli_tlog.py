"""The transparency log through the real CLI: keys, signed checkpoints, proofs checked offline,
a witness, and the attacks on each (forged or unsigned checkpoints, edited tree nodes, forks)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_support import Cli, CliWorkspace, assert_clean_error


def _key(cli: Cli, ws: CliWorkspace, tmp_path: Path) -> tuple[Path, str]:
    key_file = tmp_path / "log.key"
    out = cli.ok("log", "key", "init", ws.workspace_id, "--key-file", str(key_file))
    return key_file, out.stdout.strip().splitlines()[-1]


def _events(agent_write: Callable[..., Any], ws: CliWorkspace, n: int) -> None:
    for i in range(n):
        agent_write(ws, "append_event", {"event_type": "kora.note.recorded", "payload": {"i": i}})


def test_key_init_is_idempotent_private_and_show_prints_the_verifier_key(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    key_file, vkey = _key(cli, cli_workspace, tmp_path)
    assert key_file.stat().st_mode & 0o077 == 0
    assert "PRIVATE" not in vkey and vkey.startswith(f"isokron/{cli_workspace.workspace_id}/")
    assert _key(cli, cli_workspace, tmp_path)[1] == vkey
    assert cli.ok("log", "key", "show", cli_workspace.workspace_id).stdout.strip() == vkey
    other = tmp_path / "other.key"
    result = cli("log", "key", "init", cli_workspace.workspace_id, "--key-file", str(other))
    assert_clean_error(result, "already has key")
    key_file.chmod(0o644)
    assert_clean_error(
        cli("checkpoint", cli_workspace.workspace_id, "--key-file", str(key_file)), "chmod 600"
    )


def test_checkpoint_prove_and_verify_proof_offline(
    cli: Cli,
    cli_workspace: CliWorkspace,
    agent_write: Callable[..., Any],
    sql: Callable[..., Any],
    tmp_path: Path,
) -> None:
    ws = cli_workspace.workspace_id
    key_file, vkey = _key(cli, cli_workspace, tmp_path)
    _events(agent_write, cli_workspace, 5)
    cp = tmp_path / "cp"
    cli.ok("checkpoint", ws, "-o", str(cp), "--key-file", str(key_file))
    size = int(cp.read_text().split("\n")[1])
    inclusion = cli.json("prove", "inclusion", ws, "--seq", "3", "--key-file", str(key_file))
    assert set(inclusion) == {"tree_size", "leaf_index", "leaf_hash", "audit_path", "checkpoint"}
    assert inclusion["leaf_index"] == 2 and inclusion["tree_size"] == size
    assert all(h == h.lower() and len(h) == 64 for h in inclusion["audit_path"])
    proof = tmp_path / "inclusion.json"
    proof.write_text(json.dumps(inclusion))
    # Bound to a known event: its this_event_hash (e.g. from an export) must be the leaf.
    event_hash = sql(
        "SELECT encode(this_event_hash, 'hex') FROM hivex_foundation.event_log "
        "WHERE tenant_id = %s::uuid AND seq = 3",
        (cli_workspace.tenant_id,),
    )
    proof.write_text(json.dumps(inclusion))
    bound = cli.ok("verify-proof", str(proof), "--key", vkey, "--event-hash", event_hash, dsn=False)
    assert "its leaf is the event" in bound.stdout
    assert_clean_error(
        cli("verify-proof", str(proof), "--key", vkey, "--event-hash", "00" * 32, dsn=False),
        "not for that event",
    )
    # Offline: no --dsn, nothing but the file and the key.
    assert (
        "inclusion verified" in cli.ok("verify-proof", str(proof), "--key", vkey, dsn=False).stdout
    )

    _events(agent_write, cli_workspace, 3)
    consistency = cli.json(
        "prove", "consistency", ws, "--from", str(size), "--to", str(size + 3),
        "--key-file", str(key_file),
    )  # fmt: skip
    assert {"first", "second", "first_root", "second_root", "consistency_path"} <= set(consistency)
    cproof = tmp_path / "consistency.json"
    cproof.write_text(json.dumps(consistency))
    assert (
        "consistency verified"
        in cli.ok("verify-proof", str(cproof), "--key", vkey, dsn=False).stdout
    )

    # Without the private key: against what the log already signed.
    signed = cli.json("prove", "inclusion", ws, "--seq", "2", "--signed-only")
    assert signed["checkpoint"] == consistency["second_checkpoint"]
    again = cli.json(
        "prove", "consistency", ws, "--from", str(size), "--to", str(size + 3), "--signed-only"
    )
    assert again == consistency
    assert_clean_error(
        cli("prove", "consistency", ws, "--from", "1", "--to", str(size), "--signed-only"),
        "no checkpoint at tree size 1",
    )

    tried = caught = 0
    for doc, path in (
        ({**inclusion, "leaf_index": 3}, proof),
        ({**inclusion, "audit_path": inclusion["audit_path"][:-1]}, proof),
        (
            {**inclusion, "checkpoint": inclusion["checkpoint"].replace(f"\n{size}\n", "\n99\n")},
            proof,
        ),
        ({**inclusion, "checkpoint": inclusion["checkpoint"].split("\n\n")[0] + "\n"}, proof),
        ({**consistency, "second_root": consistency["first_root"]}, cproof),
        ({**consistency, "consistency_path": []}, cproof),
        ({k: v for k, v in consistency.items() if k != "second_checkpoint"}, cproof),
    ):
        path.write_text(json.dumps(doc))
        tried += 1
        assert_clean_error(cli("verify-proof", str(path), "--key", vkey, dsn=False))
        caught += 1
    print(f"forged proof files tried {tried}, refused {caught}")


def test_verify_against_refuses_unsigned_forged_malformed_and_empty_checkpoints(
    cli: Cli, cli_workspace: CliWorkspace, tmp_path: Path
) -> None:
    ws = cli_workspace.workspace_id
    key_file, vkey = _key(cli, cli_workspace, tmp_path)
    cp = tmp_path / "cp"
    cli.ok("checkpoint", ws, "-o", str(cp), "--key-file", str(key_file))
    assert cli("verify", ws, "--against", str(cp), "--key", vkey).exit_code == 0
    text = cp.read_text()
    size = text.split("\n")[1]
    bad = {
        "empty": "",
        "malformed": "not a checkpoint at all\n",
        "old unsigned JSON": json.dumps({"tenant_id": cli_workspace.tenant_id, "seq": 1}),
        "unsigned note": text.split("\n\n")[0] + "\n",
        "forged size": text.replace(f"\n{size}\n", f"\n{int(size) + 1}\n"),
        "[] (issue 9)": "[]",
    }
    for name, content in bad.items():
        f = tmp_path / "bad"
        f.write_text(content)
        assert_clean_error(cli("verify", ws, "--against", str(f), "--key", vkey), "refused")
        print(f"refused: {name}")
    assert_clean_error(cli("verify", ws, "--against", str(cp)), "--key")


def test_verify_re_derives_the_tree_and_names_an_edited_node(
    cli: Cli,
    cli_workspace: CliWorkspace,
    agent_write: Callable[..., Any],
    sql: Callable[..., Any],
    tmp_path: Path,
) -> None:
    ws = cli_workspace.workspace_id
    key_file, _ = _key(cli, cli_workspace, tmp_path)
    _events(agent_write, cli_workspace, 4)
    cli.ok("checkpoint", ws, "-o", str(tmp_path / "cp"), "--key-file", str(key_file))
    assert cli("verify", ws).exit_code == 0
    sql(
        "UPDATE hivex_foundation.merkle_node SET hash = sha256(hash) "
        "WHERE workspace_id = %s AND level = 1 AND idx = 0",
        (ws,),
    )
    result = cli("verify", ws, "--json")
    assert result.exit_code == 1
    kinds = [f["kind"] for f in json.loads(result.stdout)["findings"]]
    assert "merkle_mismatch" in kinds
    sql("DELETE FROM hivex_foundation.merkle_node WHERE workspace_id = %s AND level = 0", (ws,))
    assert cli("verify", ws).exit_code == 1


def test_witness_cosigns_consistent_checkpoints_and_refuses_forks(
    cli: Cli,
    cli_workspace: CliWorkspace,
    agent_write: Callable[..., Any],
    tmp_path: Path,
) -> None:
    from isokron.chain import merkle
    from isokron.chain.tlog import LogCheckpoint, sign_checkpoint
    from isokron.substrate.log_keys import read_private_key

    ws = cli_workspace.workspace_id
    key_file, vkey = _key(cli, cli_workspace, tmp_path)
    wdir, wdir2 = tmp_path / "w1", tmp_path / "w2"
    w1 = cli.ok("witness", "init", "w.example/1", "--dir", str(wdir), dsn=False).stdout.strip()
    w2 = cli.ok("witness", "init", "w.example/2", "--dir", str(wdir2), dsn=False).stdout.strip()
    cp1, cp1w = tmp_path / "cp1", tmp_path / "cp1w"
    cli.ok("checkpoint", ws, "-o", str(cp1), "--key-file", str(key_file))
    cli.ok(
        "witness",
        "cosign",
        str(cp1),
        "--log-key",
        vkey,
        "--dir",
        str(wdir),
        "-o",
        str(cp1w),
        dsn=False,
    )
    assert cli("verify", ws, "--against", str(cp1w), "--key", vkey, "--witness", w1).exit_code == 0
    # k of n: two named witnesses, only one cosigned.
    result = cli(
        "verify", ws, "--against", str(cp1w), "--key", vkey, "--witness", w1, "--witness", w2
    )
    assert_clean_error(result, "1 of the 2")
    assert cli(
        "verify", ws, "--against", str(cp1w), "--key", vkey,
        "--witness", w1, "--witness", w2, "--quorum", "1",
    ).exit_code == 0  # fmt: skip

    size = int(cp1.read_text().split("\n")[1])
    _events(agent_write, cli_workspace, 2)
    cp2 = tmp_path / "cp2"
    cli.ok("checkpoint", ws, "-o", str(cp2), "--key-file", str(key_file))
    proof = tmp_path / "proof.json"
    proof.write_text(cli.ok(
        "prove", "consistency", ws, "--from", str(size), "--to", str(size + 2),
        "--key-file", str(key_file), "--json",
    ).stdout)  # fmt: skip
    cosign = ["witness", "cosign", "--log-key", vkey, "--dir", str(wdir)]
    assert_clean_error(cli(*cosign, str(cp2), dsn=False), "consistency proof")
    cli.ok(*cosign, str(cp2), "--proof", str(proof), dsn=False)

    # A lying log signs two different heads: same size with another root, and a smaller tree.
    signer = read_private_key(key_file)
    fork = tmp_path / "fork"
    fork.write_text(
        sign_checkpoint(LogCheckpoint(signer.name, size + 2, merkle.EMPTY_ROOT), signer)
    )
    assert_clean_error(cli(*cosign, str(fork), dsn=False), "fork refused")
    assert_clean_error(cli(*cosign, str(cp1), dsn=False), "fork refused")
    print("witness forks tried 2, refused 2")
