"""Where the operator keeps private keys: the log's signing key and a witness's cosigning key.

Private keys live in files only their owner can read (mode 0600, created exclusively so an
existing key is never overwritten), in Go's ``PRIVATE+KEY+…`` text form
(:mod:`isokron.chain.note`). The default folder is the user's config directory;
``ISOKRON_LOG_KEY_DIR`` or ``--key-file`` point elsewhere.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import platformdirs

from isokron.chain.note import Signer
from isokron.errors import ChainError, ConfigError

KEY_DIR_ENV = "ISOKRON_LOG_KEY_DIR"


def default_key_dir() -> Path:
    override = os.environ.get(KEY_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("isokron", appauthor=False)) / "log-keys"


def default_key_file(workspace_id: str, tenant_id: object) -> Path:
    """The default private key file of one workspace's log (unique per database)."""
    return default_key_dir() / f"{workspace_id}-{tenant_id}.key"


def write_private_key(path: Path, signer: Signer) -> None:
    """Create ``path`` (0600, never overwriting) holding the private key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite a private key") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(signer.encode() + "\n")


def read_private_key(path: Path) -> Signer:
    """Load a private key file; refuse one that others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(
            f"no private key at {path}; create it with `isokron log key init` "
            "(or `isokron witness init`), or give --key-file"
        ) from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path} is not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by others; chmod 600 it (a private key)")
    try:
        return Signer.parse(path.read_text(encoding="ascii"))
    except (UnicodeDecodeError, ChainError) as exc:
        raise ConfigError(f"{path} does not hold a private key: {exc}") from None
