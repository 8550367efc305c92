"""PostgreSQL connection strings: validation and the per-role DSNs IsoKron derives from one.

The operator gives one admin DSN (or none, for the embedded server). The reader and gateway
roles connect with the same host and database under their own user names unless their own DSNs
are given (``ISOKRON_READER_DSN``, ``ISOKRON_GATEWAY_DSN``), e.g. when they have passwords.

Roles are cluster-wide in PostgreSQL, so each database has its own three roles, named after it
(:func:`database_roles`): two IsoKron databases on one server share no power. The migrations
spell the roles ``isokron_owner`` / ``isokron_reader`` / ``isokron_gateway``; the migration
runner substitutes this database's names (``isokron.substrate.migrate``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from isokron.errors import ConfigError

#: The role names as the migration files spell them (replaced per database when applied).
READER_ROLE = "isokron_reader"
GATEWAY_ROLE = "isokron_gateway"
OWNER_ROLE = "isokron_owner"
ALLOWED_SCHEMES = ("postgres", "postgresql")
_SLUG_CHARS = re.compile(r"[^a-z0-9]+")
_SLUG_MAX = 24


@dataclass(frozen=True, slots=True)
class DatabaseRoles:
    """The three roles of one IsoKron database."""

    owner: str
    reader: str
    gateway: str

    def as_substitutions(self) -> dict[str, str]:
        """Spelled name in the migrations -> this database's role name."""
        return {OWNER_ROLE: self.owner, READER_ROLE: self.reader, GATEWAY_ROLE: self.gateway}


def database_roles(database: str) -> DatabaseRoles:
    """The role names of the IsoKron database ``database`` on its server.

    ``isokron_<slug>_<8 hex of SHA-256(name)>_<kind>``: readable, at most 49 characters (the
    limit is 63), and distinct for distinct database names however they are spelled.
    """
    if not database:
        raise ConfigError("the DSN names no database; add /DATABASE after host:port")
    slug = _SLUG_CHARS.sub("_", database.lower()).strip("_")[:_SLUG_MAX] or "db"
    tag = hashlib.sha256(database.encode("utf-8")).hexdigest()[:8]
    base = f"isokron_{slug}_{tag}"
    return DatabaseRoles(owner=f"{base}_owner", reader=f"{base}_reader", gateway=f"{base}_gateway")


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
    # Imported here: the gateway validates DSNs but otherwise never loads psycopg (start-up time).
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn.strip())
    except psycopg.ProgrammingError:
        # libpq's message quotes the offending part, which may be a password: never repeat it.
        raise ConfigError(
            "libpq cannot parse the DSN; check its percent-encoding (%XX) and quoting"
        ) from None
    return dsn.strip()


def check_admin_dsn(dsn: str) -> str:
    """Refuse a reader or gateway DSN where the admin (owner) DSN is needed."""
    user = unquote(urlsplit(validate_dsn(dsn)).username or "")
    kinds = {READER_ROLE: "reader", GATEWAY_ROLE: "gateway"}
    database = database_name(dsn)
    if database:
        roles = database_roles(database)
        kinds.update({roles.reader: "reader", roles.gateway: "gateway"})
    if user in kinds:
        raise ConfigError(
            f"--dsn names the {kinds[user]} role ({user}), which cannot run operator commands; "
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
    parts = urlsplit(validate_dsn(dsn))
    name = unquote(parts.path.strip("/"))
    if not name:
        for item in parts.query.split("&"):
            key, _, value = item.partition("=")
            if key == "dbname":
                name = unquote(value)
    return name


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
        """Derive the reader and gateway DSNs from the admin one unless given explicitly.

        The derived ones use this database's own roles (:func:`database_roles`).
        """
        admin = validate_dsn(admin)
        roles = database_roles(database_name(admin))
        return cls(
            admin=admin,
            reader=validate_dsn(reader) if reader else with_user(admin, roles.reader),
            gateway=validate_dsn(gateway) if gateway else with_user(admin, roles.gateway),
        )
