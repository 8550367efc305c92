"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, byte-compatible with Go's
golang.org/x/mod/sumdb/note.

    note      = text (ends in "\\n") "\\n" signature-line+
    signature = "— " key-name " " base64(key ID (4 bytes, big-endian) || signature bytes) "\\n"
    key ID    = SHA-256(key name || "\\n" || type byte || public key)[:4]

Key encodings (the same as Go's):

    verifier key = name "+" hex8(key ID) "+" base64(type byte || 32-byte public key)
    private key  = "PRIVATE+KEY+" name "+" hex8(key ID) "+" base64(type byte || 32-byte seed)

Type bytes: 0x01 Ed25519 note signatures (logs), 0x04 timestamped Ed25519 cosignatures
(witnesses, c2sp.org/tlog-cosignature). Parsing is strict: anything malformed raises
:class:`isokron.errors.ChainError` with a sentence saying what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from isokron.errors import ChainError

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "Note",
    "NoteSignature",
    "Signer",
    "Verifier",
    "format_note",
    "key_id",
    "parse_note",
    "verified_signers",
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
_ALGS = (ALG_ED25519, ALG_COSIGNATURE_V1)
#: The spec asks verifiers to accept at least 16; more is treated as a malformed note.
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_SIG_PREFIX = "— "
_UINT32 = struct.Struct(">I")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ChainError(f"{what} is not valid base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_name(name: str) -> str:
    """A key name: non-empty, no Unicode space, no '+' (signed-note §Format)."""
    if not name or "+" in name or any(ch.isspace() for ch in name) or not name.isprintable():
        raise ChainError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || alg || public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()
    return int(_UINT32.unpack(digest[:4])[0])


@dataclass(frozen=True, slots=True)
class Verifier:
    """A public key that checks signatures of one name and key ID."""

    name: str
    key_id: int
    alg: int
    public_key: bytes

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse ``name+hex8+base64(type||key)``; the key ID must match the key."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise ChainError("a verifier key looks like NAME+8 hex digits+BASE64")
        name = check_name(parts[0])
        try:
            kid = int(parts[1], 16)
        except ValueError:
            raise ChainError("the verifier key's ID is not 8 hex digits") from None
        raw = _b64decode(parts[2], "the verifier key")
        if len(raw) != 33 or raw[0] not in _ALGS:
            raise ChainError("the verifier key is not an Ed25519 note or cosignature key")
        alg, public = raw[0], raw[1:]
        if key_id(name, alg, public) != kid:
            raise ChainError("the verifier key's ID does not match its name and public key")
        return cls(name=name, key_id=kid, alg=alg, public_key=public)

    def encode(self) -> str:
        """``name+hex8+base64(type||key)``."""
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([self.alg]) + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` (without the key ID) is this key's over ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signer:
    """A private Ed25519 key with its name; never printed, only written to a 0600 file."""

    name: str
    alg: int
    seed: bytes = field(repr=False)

    @classmethod
    def generate(cls, name: str, alg: int = ALG_ED25519) -> Signer:
        """A fresh random key."""
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(name=check_name(name), alg=alg, seed=seed)

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+name+hex8+base64(type||seed)`` (Go's sumdb/note format)."""
        text = skey.strip()
        if not text.startswith(_PRIVATE_PREFIX):
            raise ChainError("a private key starts with PRIVATE+KEY+")
        parts = text[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise ChainError("a private key looks like PRIVATE+KEY+NAME+8 hex digits+BASE64")
        name = check_name(parts[0])
        raw = _b64decode(parts[2], "the private key")
        if len(raw) != 33 or raw[0] not in _ALGS:
            raise ChainError("the private key is not an Ed25519 note or cosignature key")
        signer = cls(name=name, alg=raw[0], seed=raw[1:])
        if f"{signer.key_id:08x}" != parts[1].lower():
            raise ChainError("the private key's ID does not match its name and key")
        return signer

    @property
    def public_key(self) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.alg, self.public_key)

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.alg, self.public_key)

    def encode(self) -> str:
        """The private key text (keep it secret)."""
        return (
            f"{_PRIVATE_PREFIX}{self.name}+{self.key_id:08x}+{_b64(bytes([self.alg]) + self.seed)}"
        )

    def sign(self, message: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature over ``message``."""
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, key ID and the signature bytes after the ID."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {_b64(_UINT32.pack(self.key_id) + self.signature)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed signed note: its text (ending in a newline) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def with_signature(self, sig: NoteSignature) -> Note:
        """The note with one more signature line (replacing one of the same name and ID)."""
        kept = tuple(s for s in self.signatures if (s.name, s.key_id) != (sig.name, sig.key_id))
        return Note(self.text, (*kept, sig))

    def encode(self) -> str:
        return format_note(self.text, self.signatures)


def format_note(text: str, signatures: tuple[NoteSignature, ...] | list[NoteSignature]) -> str:
    """Serialise a note: text, blank line, signature lines."""
    _check_text(text)
    if not signatures:
        raise ChainError("a signed note needs at least one signature")
    return text + "\n" + "".join(s.line() for s in signatures)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise ChainError("the note text must end with a newline")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise ChainError("the note contains a control character")


def parse_note(data: str | bytes) -> Note:
    """Parse a signed note strictly; raise ChainError naming what is malformed."""
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise ChainError("the note is larger than 1 MiB")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ChainError("the note is not valid UTF-8") from None
    if not data:
        raise ChainError("the note is empty")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in data):
        raise ChainError("the note contains a control character (only newlines are allowed)")
    split = data.rfind("\n\n")
    if split < 0:
        raise ChainError("the note has no signatures (no blank line before signature lines)")
    text, sig_block = data[: split + 1], data[split + 2 :]
    if not sig_block.endswith("\n"):
        raise ChainError("the note's last signature line does not end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise ChainError(f"the note has more than {MAX_SIGNATURES} signatures")
    sigs = tuple(_parse_signature_line(line) for line in lines)
    return Note(text=text, signatures=sigs)


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise ChainError(f"not a signature line: {line[:60]!r}")
    rest = line[len(_SIG_PREFIX) :]
    name, sep, b64 = rest.partition(" ")
    if not sep or " " in b64:
        raise ChainError(f"a signature line is '— NAME BASE64': {line[:60]!r}")
    check_name(name)
    raw = _b64decode(b64, f"the signature of {name}")
    if len(raw) < 5:
        raise ChainError(f"the signature of {name} is too short")
    return NoteSignature(name, int(_UINT32.unpack(raw[:4])[0]), raw[4:])


def sign_text(text: str, signer: Signer) -> NoteSignature:
    """A note signature line of ``signer`` (Ed25519, type 0x01) over ``text``."""
    _check_text(text)
    if signer.alg != ALG_ED25519:
        raise ChainError("a note is signed with an Ed25519 note key (type 0x01)")
    return NoteSignature(signer.name, signer.key_id, signer.sign(text.encode("utf-8")))


def verified_signers(note: Note, verifiers: list[Verifier]) -> list[Verifier]:
    """The note (type 0x01) verifiers whose signature on ``note`` holds.

    Unknown signatures are ignored, as the spec requires; a signature of a known name and key
    ID that fails is a forgery and raises ChainError; no verified signature raises too.
    """
    found: list[Verifier] = []
    for sig in note.signatures:
        for v in verifiers:
            if v.alg != ALG_ED25519 or (v.name, v.key_id) != (sig.name, sig.key_id):
                continue
            if not v.verify(note.text.encode("utf-8"), sig.signature):
                raise ChainError(f"the signature of {v.name} does not verify: forged or altered")
            if v not in found:
                found.append(v)
    if not found:
        names = ", ".join(v.name for v in verifiers) or "none"
        raise ChainError(f"the note carries no signature of a known key (expected: {names})")
    return found
