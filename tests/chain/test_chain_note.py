"""Signed notes, checkpoints and cosignatures against the specs' own examples.

Sources of the vectors (facts re-typed here, no code copied):
- golang.org/x/mod ``sumdb/note/note_test.go`` (github.com/golang/mod): the PeterNeumann and
  EnochRoot keys, ``TestSign``'s exact signed output and ``TestOpen``'s signatures and
  malformed messages. Go's note package is the reference implementation of c2sp.org/signed-note.
- C2SP ``tlog-checkpoint.md`` and ``tlog-cosignature.md`` (github.com/C2SP/C2SP): the
  ``example.com/behind-the-sofa`` checkpoint and the ``witness.example.com/w1`` cosignature
  line, whose timestamp the spec's signed-message example gives as 1679315147.
"""

from __future__ import annotations

import base64
import struct

import pytest

from isokron.chain import merkle
from isokron.chain.note import (
    ALG_COSIGNATURE_V1,
    Note,
    Signer,
    Verifier,
    format_note,
    parse_note,
    sign_text,
    verified_signers,
)
from isokron.chain.tlog import (
    LogCheckpoint,
    check_witness_step,
    cosign,
    open_checkpoint,
    sign_checkpoint,
    verified_cosigners,
)
from isokron.errors import ChainError

# golang.org/x/mod sumdb/note/note_test.go
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"  # noqa: E501
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"  # noqa: E501
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"  # noqa: E501

# C2SP tlog-checkpoint.md / tlog-cosignature.md
SOFA_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SOFA_NOTE = (
    SOFA_BODY
    + "\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX"
    "3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)


def test_go_private_key_signs_exactly_the_published_note() -> None:
    signer = Signer.parse(PETER_SKEY)
    assert signer.verifier().encode() == PETER_VKEY
    assert format_note(TEXT, [sign_text(TEXT, signer)]) == TEXT + "\n" + PETER_SIG
    assert signer.encode() == PETER_SKEY


def test_go_signatures_open_with_their_verifier_keys() -> None:
    note = parse_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG)
    peter, enoch = Verifier.parse(PETER_VKEY), Verifier.parse(ENOCH_VKEY)
    assert note.text == TEXT
    assert verified_signers(note, [peter]) == [peter]  # Enoch's unknown signature is ignored
    assert verified_signers(note, [peter, enoch]) == [peter, enoch]
    with pytest.raises(ChainError, match="no signature of a known key"):
        verified_signers(note, [])


def test_go_invalid_signature_and_malformed_notes_are_refused() -> None:
    peter = Verifier.parse(PETER_VKEY)
    forged = parse_note(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:])
    with pytest.raises(ChainError, match="does not verify"):
        verified_signers(forged, [peter])
    bad = [  # note_test.go TestOpen badMsgs
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT
        + "\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",  # noqa: E501
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG * 101,
        "",
    ]
    for msg in bad:
        with pytest.raises(ChainError):
            verified_signers(parse_note(msg), [peter])
    with pytest.raises(ChainError):
        parse_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode())


def test_go_verifier_key_manglings_are_refused() -> None:
    # note_test.go TestNewVerifier: every single-byte change and every proper substring fails.
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(ChainError):
            Verifier.parse(mangled)
    for cut in range(1, len(PETER_VKEY)):
        with pytest.raises(ChainError):
            Verifier.parse(PETER_VKEY[:cut])
    with pytest.raises(ChainError):  # unknown algorithm, with adjusted key hash
        Verifier.parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_c2sp_checkpoint_example_parses() -> None:
    note = parse_note(SOFA_NOTE)
    cp = LogCheckpoint.parse_body(note.text)
    assert (cp.origin, cp.tree_size) == ("example.com/behind-the-sofa", 20852163)
    assert base64.b64encode(cp.root_hash).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert cp.body() == SOFA_BODY
    assert [s.name for s in note.signatures] == [
        "example.com/behind-the-sofa",
        "witness.example.com/w1",
    ]


def test_c2sp_cosignature_example_carries_the_spec_timestamp() -> None:
    cosig = parse_note(SOFA_NOTE).signatures[1]
    assert len(cosig.signature) == 8 + 64  # timestamped_signature: u64 time + Ed25519
    assert struct.unpack(">Q", cosig.signature[:8])[0] == 1679315147


def test_checkpoint_round_trip_and_forgeries() -> None:
    log = Signer.generate("isokron/acme/x")
    cp = LogCheckpoint("isokron/acme/x", 5, merkle.leaf_hash(b"r"))
    note_text = sign_checkpoint(cp, log)
    assert open_checkpoint(note_text, log.verifier())[0] == cp
    other = Signer.generate("isokron/acme/x")
    forged = sign_checkpoint(LogCheckpoint(cp.origin, 5, merkle.EMPTY_ROOT), other)
    tried = caught = 0
    for bad in [
        forged,  # another key with the same name: unknown key ID, so no known signature
        note_text.replace("\n5\n", "\n6\n"),  # size edited after signing
        note_text.split("\n\n")[0] + "\n",  # unsigned
        "",  # empty
        '{"tenant_id": "x", "seq": 5}',  # the old unsigned JSON checkpoint
        note_text + "garbage",
    ]:
        tried += 1
        with pytest.raises(ChainError):
            open_checkpoint(bad, log.verifier())
        caught += 1
    print(f"checkpoint forgeries tried {tried}, refused {caught}")


def test_cosignatures_verify_and_forged_ones_are_refused() -> None:
    log = Signer.generate("isokron/acme/x")
    w1 = Signer.generate("witness.example/w1", ALG_COSIGNATURE_V1)
    w2 = Signer.generate("witness.example/w2", ALG_COSIGNATURE_V1)
    cp = LogCheckpoint("isokron/acme/x", 5, merkle.leaf_hash(b"r"))
    note = parse_note(sign_checkpoint(cp, log))
    signed = note.with_signature(cosign(note, w1, 1_700_000_000))
    assert verified_cosigners(parse_note(signed.encode()), [w1.verifier(), w2.verifier()]) == {
        "witness.example/w1": 1_700_000_000
    }
    sig = signed.signatures[-1]
    tampered = Note(
        signed.text,
        (
            *signed.signatures[:-1],
            type(sig)(sig.name, sig.key_id, sig.signature[:7] + b"\x01" + sig.signature[8:]),
        ),
    )
    with pytest.raises(ChainError, match="does not verify"):
        verified_cosigners(tampered, [w1.verifier()])


def test_witness_refuses_forks_and_shrinking_trees() -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(9)]
    tree, nodes, roots = merkle.CompactRange(), {}, {}
    for h in leaves:
        for n in tree.append(h):
            nodes[(n.level, n.index)] = n.hash
        roots[tree.size] = tree.root()

    def node(level: int, index: int) -> bytes:
        return nodes[(level, index)]

    seen = LogCheckpoint("o", 5, roots[5])
    check_witness_step(None, seen, None)  # trust on first use
    check_witness_step(seen, LogCheckpoint("o", 5, roots[5]), None)  # same head again
    check_witness_step(seen, LogCheckpoint("o", 9, roots[9]), merkle.consistency_path(5, 9, node))
    cases = {
        "same size, other root": (LogCheckpoint("o", 5, roots[4]), None),
        "shrinking tree": (LogCheckpoint("o", 4, roots[4]), None),
        "no proof": (LogCheckpoint("o", 9, roots[9]), None),
        "forked bigger tree": (
            LogCheckpoint("o", 9, merkle.EMPTY_ROOT),
            merkle.consistency_path(5, 9, node),
        ),
        "other log": (LogCheckpoint("p", 9, roots[9]), merkle.consistency_path(5, 9, node)),
    }
    for name, (new, proof) in cases.items():
        with pytest.raises(ChainError):
            check_witness_step(seen, new, proof)
        print(f"witness refused: {name}")
