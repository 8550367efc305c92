"""How one console process is configured (``isokron console`` or the Hermes dashboard tab)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from isokron.substrate.dsn import SubstrateDSNs, validate_dsn
from isokron.substrate.embedded import default_data_dir, start_embedded

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8770
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8765"
#: A session ends after this long without a request, and after SESSION_MAX_SECONDS in any case.
SESSION_IDLE_SECONDS = 30 * 60
SESSION_MAX_SECONDS = 12 * 60 * 60


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """Where the console reads from and writes to, and how it behaves.

    ``dsns.reader`` serves the workspace reads (row-level security scopes them to the signed-in
    operator's workspace); ``dsns.gateway`` authenticates tokens and performs the operator's
    writes, which the database authenticates from the token's SHA-256; ``dsns.admin`` runs
    verification, checkpoints, the migrations gate and the token list.
    """

    dsns: SubstrateDSNs
    read_only: bool = False
    base_path: str = ""
    gateway_url: str | None = DEFAULT_GATEWAY_URL
    state_dir: Path | None = None
    #: The Hermes home whose provider outbox (``isokron/outbox.sqlite3`` in it) the
    #: 'Outbox empty' gate reads; None: that gate answers unknown.
    hermes_home: Path | None = None
    secure_cookies: bool = False
    session_idle_seconds: float = SESSION_IDLE_SECONDS
    session_max_seconds: float = SESSION_MAX_SECONDS
    #: Refuse non-loopback Host headers (DNS rebinding). Off behind a proxy and inside Hermes.
    check_host: bool = True

    def normalized_base_path(self) -> str:
        """``base_path`` as ``/prefix`` without a trailing slash ("" for none)."""
        p = self.base_path.strip()
        if not p or p == "/":
            return ""
        return "/" + p.strip("/")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def settings_from_environment() -> ConsoleSettings:
    """Settings for the Hermes tab, from the same variables the CLI reads.

    ``ISOKRON_DSN`` (admin; default: the embedded PostgreSQL in the user data directory),
    ``ISOKRON_READER_DSN`` / ``ISOKRON_GATEWAY_DSN`` (default: derived), plus
    ``ISOKRON_CONSOLE_READ_ONLY``, ``ISOKRON_GATEWAY_URL`` and ``ISOKRON_CONSOLE_STATE_DIR``.
    The Hermes home whose outbox the 'Outbox empty' gate reads is ``HERMES_HOME``, else the
    home of the Hermes whose dashboard this tab runs in.
    """
    from isokron.provider.host import hermes_home_default  # Hermes's own answer, if installed

    given = os.environ.get("ISOKRON_DSN")
    admin = validate_dsn(given) if given else start_embedded(default_data_dir())
    dsns = SubstrateDSNs.derive(
        admin,
        reader=os.environ.get("ISOKRON_READER_DSN") or None,
        gateway=os.environ.get("ISOKRON_GATEWAY_DSN") or None,
    )
    home = os.environ.get("HERMES_HOME", "").strip() or hermes_home_default()
    state = os.environ.get("ISOKRON_CONSOLE_STATE_DIR")
    return ConsoleSettings(
        dsns=dsns,
        read_only=_flag("ISOKRON_CONSOLE_READ_ONLY"),
        gateway_url=os.environ.get("ISOKRON_GATEWAY_URL", DEFAULT_GATEWAY_URL) or None,
        hermes_home=Path(home).expanduser() if home else None,
        state_dir=Path(state) if state else None,
        check_host=False,  # Hermes's dashboard validates Host itself
    )
