"""Transparency-log documents: C2SP checkpoints, witness cosignatures, proof files.

    checkpoint body (c2sp.org/tlog-checkpoint)      cosigned message (c2sp.org/tlog-cosignature)
        <origin>\\n                                      cosignature/v1\\n
        <tree size, decimal>\\n                          time <unix seconds>\\n
        <base64 root hash>\\n                            <checkpoint body>

A checkpoint is signed by the log's Ed25519 note key (type 0x01) whose name is the origin;
a witness adds a cosignature line (type 0x04): key ID, 8-byte big-endian timestamp, signature.

Proof files (``isokron prove … --json``) are JSON objects checked offline by
:func:`verify_proof_document` with nothing but the file and the log's verifier key.
Everything here is pure; malformed or failing input raises :class:`ChainError`.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from isokron.chain import merkle
from isokron.chain.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Note,
    NoteSignature,
    Signer,
    Verifier,
    parse_note,
    sign_text,
    verified_signers,
)
from isokron.errors import ChainError

__all__ = [
    "COSIGNATURE_HEADER",
    "LogCheckpoint",
    "cosign",
    "inclusion_document",
    "check_witness_step",
    "consistency_document",
    "open_checkpoint",
    "sign_checkpoint",
    "verified_cosigners",
    "verify_proof_document",
]

COSIGNATURE_HEADER = "cosignature/v1"
_TS = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    """A tree head: origin (the log's name), tree size and RFC 9162 root hash."""

    origin: str
    tree_size: int
    root_hash: bytes

    def body(self) -> str:
        """The note text of the checkpoint (no extension lines)."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return f"{self.origin}\n{self.tree_size}\n{root}\n"

    @classmethod
    def parse_body(cls, text: str) -> LogCheckpoint:
        """Parse a checkpoint note text; extension lines are refused (IsoKron writes none)."""
        lines = text.split("\n")
        if len(lines) != 4 or lines[3] != "":
            raise ChainError("a checkpoint has exactly three lines: origin, tree size, root hash")
        origin, size_text, root_text = lines[:3]
        if not origin:
            raise ChainError("the checkpoint's origin line is empty")
        if (
            not size_text.isascii()
            or not size_text.isdigit()
            or (size_text != "0" and size_text.startswith("0"))
        ):
            raise ChainError(f"the checkpoint's tree size {size_text[:30]!r} is not a decimal")
        try:
            root = base64.b64decode(root_text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ChainError("the checkpoint's root hash is not base64") from None
        if len(root) != merkle.HASH_SIZE:
            raise ChainError("the checkpoint's root hash is not 32 bytes")
        return cls(origin=origin, tree_size=int(size_text), root_hash=root)


def sign_checkpoint(checkpoint: LogCheckpoint, signer: Signer) -> str:
    """The signed note of ``checkpoint`` (the key's name must be the origin)."""
    if signer.name != checkpoint.origin:
        raise ChainError(f"log key {signer.name!r} cannot sign for origin {checkpoint.origin!r}")
    return Note(checkpoint.body(), (sign_text(checkpoint.body(), signer),)).encode()


def open_checkpoint(note_text: str | bytes, log_key: Verifier) -> tuple[LogCheckpoint, Note]:
    """Parse a signed checkpoint and check the log's signature; refuse unsigned or forged ones."""
    if log_key.alg != ALG_ED25519:
        raise ChainError("the log key must be an Ed25519 note key (type 0x01)")
    note = parse_note(note_text)
    verified_signers(note, [log_key])
    checkpoint = LogCheckpoint.parse_body(note.text)
    if checkpoint.origin != log_key.name:
        raise ChainError(
            f"the checkpoint is for origin {checkpoint.origin!r}, not the log {log_key.name!r}"
        )
    return checkpoint, note


def _cosigned_message(timestamp: int, text: str) -> bytes:
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{text}".encode()


def cosign(note: Note, witness: Signer, timestamp: int) -> NoteSignature:
    """A tlog-cosignature/v1 line of ``witness`` over the checkpoint ``note``."""
    if witness.alg != ALG_COSIGNATURE_V1:
        raise ChainError("a witness key must be a cosignature key (type 0x04)")
    if not 0 <= timestamp < 2**63:
        raise ChainError("the cosignature timestamp is out of range")
    signature = witness.sign(_cosigned_message(timestamp, note.text))
    return NoteSignature(witness.name, witness.key_id, _TS.pack(timestamp) + signature)


def verified_cosigners(note: Note, witnesses: Sequence[Verifier]) -> dict[str, int]:
    """Witness name -> cosignature timestamp, for each known witness whose cosignature holds.

    A cosignature of a known witness name and key ID that fails raises ChainError (forgery).
    """
    found: dict[str, int] = {}
    for sig in note.signatures:
        for w in witnesses:
            if w.alg != ALG_COSIGNATURE_V1 or (w.name, w.key_id) != (sig.name, sig.key_id):
                continue
            if len(sig.signature) != 8 + 64:
                raise ChainError(f"the cosignature of {w.name} is malformed")
            timestamp = int(_TS.unpack(sig.signature[:8])[0])
            message = _cosigned_message(timestamp, note.text)
            if timestamp >= 2**63 or not w.verify(message, sig.signature[8:]):
                raise ChainError(f"the cosignature of {w.name} does not verify: forged or altered")
            found[w.name] = timestamp
    return found


def check_witness_step(
    seen: LogCheckpoint | None, new: LogCheckpoint, proof: Sequence[bytes] | None
) -> None:
    """The witness rule: cosign ``new`` only if it extends ``seen`` (the last one cosigned).

    Same size with another root, or a smaller size, is a fork or rollback and refused; a larger
    size needs a valid consistency proof from ``seen``. The first checkpoint is trusted on
    first use.
    """
    if seen is None:
        return
    if seen.origin != new.origin:
        raise ChainError(f"origin {new.origin!r} is not the log {seen.origin!r}")
    if new.tree_size < seen.tree_size:
        raise ChainError(
            f"fork refused: tree size {new.tree_size} is smaller than the {seen.tree_size} "
            "already cosigned (the log shrank or was rolled back)"
        )
    if new.tree_size == seen.tree_size:
        if new.root_hash != seen.root_hash:
            raise ChainError(
                f"fork refused: a second root for tree size {new.tree_size} differs from the "
                "one already cosigned (the log shows different histories)"
            )
        return
    if proof is None:
        raise ChainError(
            f"a consistency proof from size {seen.tree_size} to {new.tree_size} is needed "
            f"(isokron prove consistency WORKSPACE --from {seen.tree_size} "
            f"--to {new.tree_size} --json)"
        )
    try:
        merkle.verify_consistency(
            seen.tree_size, new.tree_size, seen.root_hash, new.root_hash, proof
        )
    except ChainError as exc:
        raise ChainError(f"fork refused: {exc}") from None


def _hex_list(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise ChainError(f"{what} must be a list of hex hashes")
    return [_hex(item, what) for item in value]


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64 or value != value.lower():
        raise ChainError(f"{what} must hold 64 lowercase hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ChainError(f"{what} must hold 64 lowercase hex digits") from None


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ChainError(f"the proof's {key!r} must be a non-negative integer")
    return value


def inclusion_document(
    *, tree_size: int, leaf_index: int, leaf: bytes, path: Sequence[bytes], checkpoint: str
) -> dict[str, Any]:
    """The JSON shape of an inclusion proof (``isokron prove inclusion --json``)."""
    return {
        "tree_size": tree_size,
        "leaf_index": leaf_index,
        "leaf_hash": leaf.hex(),
        "audit_path": [p.hex() for p in path],
        "checkpoint": checkpoint,
    }


def consistency_document(
    *,
    first: int,
    second: int,
    first_root: bytes,
    second_root: bytes,
    path: Sequence[bytes],
    first_checkpoint: str,
    second_checkpoint: str,
) -> dict[str, Any]:
    """The JSON shape of a consistency proof, with both signed checkpoints."""
    return {
        "first": first,
        "second": second,
        "first_root": first_root.hex(),
        "second_root": second_root.hex(),
        "consistency_path": [p.hex() for p in path],
        "first_checkpoint": first_checkpoint,
        "second_checkpoint": second_checkpoint,
    }


def verify_proof_document(doc: Any, log_key: Verifier) -> str:
    """Check an inclusion or consistency proof file offline; return a one-line verdict."""
    if not isinstance(doc, Mapping):
        raise ChainError("a proof file holds a JSON object")
    if "audit_path" in doc:
        checkpoint, _ = open_checkpoint(_str(doc, "checkpoint"), log_key)
        size, index = _int(doc, "tree_size"), _int(doc, "leaf_index")
        if size != checkpoint.tree_size:
            raise ChainError(
                f"the proof is for size {size}, the checkpoint for {checkpoint.tree_size}"
            )
        leaf = _hex(doc.get("leaf_hash"), "leaf_hash")
        merkle.verify_inclusion(
            index, size, leaf, _hex_list(doc.get("audit_path"), "audit_path"), checkpoint.root_hash
        )
        return (
            f"inclusion verified: leaf {index} (seq {index + 1}) is in {checkpoint.origin} "
            f"at tree size {size}"
        )
    if "consistency_path" in doc:
        first, second = _int(doc, "first"), _int(doc, "second")
        roots = (
            _hex(doc.get("first_root"), "first_root"),
            _hex(doc.get("second_root"), "second_root"),
        )
        for key, size, root in (
            ("first_checkpoint", first, roots[0]),
            ("second_checkpoint", second, roots[1]),
        ):
            cp, _ = open_checkpoint(_str(doc, key), log_key)
            if (cp.tree_size, cp.root_hash) != (size, root):
                raise ChainError(f"{key} does not sign the proof's size {size} and root")
        path = _hex_list(doc.get("consistency_path"), "consistency_path")
        merkle.verify_consistency(first, second, roots[0], roots[1], path)
        return f"consistency verified: tree size {second} of {log_key.name} extends size {first}"
    raise ChainError("not a proof file: it has neither audit_path nor consistency_path")


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise ChainError(f"the proof has no signed {key!r} (signed note text)")
    return value
