"""PostgreSQL connection strings: validation and the per-role DSNs IsoKron derives from one.

The operator gives one admin DSN (or none, for the embedded server). The reader and gateway
roles connect with the same host and database under their own user names unless their own DSNs
are given (``ISOKRON_READER_DSN``, ``ISOKRON_GATEWAY_DSN``), e.g. when they have passwords.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from isokron.errors import ConfigError

READER_ROLE = "isokron_reader"
GATEWAY_ROLE = "isokron_gateway"
OWNER_ROLE = "isokron_owner"
ALLOWED_SCHEMES = ("postgres", "postgresql")


def validate_dsn(dsn: str) -> str:
    """Return ``dsn`` if it is a usable ``postgresql://`` URL, else raise ConfigError."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigError("the DSN is empty; give postgresql://user@host:port/database")
    parts = urlsplit(dsn.strip())
    if parts.scheme not in ALLOWED_SCHEMES:
        raise ConfigError(
            f"DSN scheme {parts.scheme or '(none)'!r} is not supported; "
            "use postgresql://user@host:port/database"
        )
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise ConfigError("the DSN names no database; add /DATABASE after host:port")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ConfigError(f"the DSN's port is not a number: {exc}") from None
    host = parts.hostname or ""
    if any(ch.isspace() for ch in host):
        # Never quote the DSN itself here: it may carry a password.
        raise ConfigError("the DSN's host contains a space; write it as %20 or fix the host name")
    return dsn.strip()


def check_admin_dsn(dsn: str) -> str:
    """Refuse a reader or gateway DSN where the admin (owner) DSN is needed."""
    user = urlsplit(validate_dsn(dsn)).username or ""
    if user in (READER_ROLE, GATEWAY_ROLE):
        role = "reader" if user == READER_ROLE else "gateway"
        raise ConfigError(
            f"--dsn names the {role} role ({user}), which cannot run operator commands; "
            "give the admin (owner) DSN"
        )
    return dsn


def with_user(dsn: str, user: str, password: str | None = None) -> str:
    """Return ``dsn`` with its user (and password) replaced; host, port and query are kept."""
    parts = urlsplit(validate_dsn(dsn))
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = quote(user, safe="")
    if password:
        netloc += ":" + quote(password, safe="")
    netloc += "@" + host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def with_database(dsn: str, database: str) -> str:
    """Return ``dsn`` pointing at another database on the same server."""
    parts = urlsplit(validate_dsn(dsn))
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database, safe=""), parts.query, ""))


def database_name(dsn: str) -> str:
    """The database a DSN names."""
    return urlsplit(validate_dsn(dsn)).path.strip("/")


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn.replace(":@", "@", 1) if parts.password == "" else dsn
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class SubstrateDSNs:
    """The three connection strings of one substrate."""

    admin: str
    reader: str
    gateway: str

    @classmethod
    def derive(
        cls, admin: str, *, reader: str | None = None, gateway: str | None = None
    ) -> SubstrateDSNs:
        """Derive the reader and gateway DSNs from the admin one unless given explicitly."""
        admin = validate_dsn(admin)
        return cls(
            admin=admin,
            reader=validate_dsn(reader) if reader else with_user(admin, READER_ROLE),
            gateway=validate_dsn(gateway) if gateway else with_user(admin, GATEWAY_ROLE),
        )
