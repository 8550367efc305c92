"""Every error IsoKron raises on purpose.

    IsoKronError
    ├── ConfigError                 bad DSN, bad option, missing setting
    ├── SubstrateError              the database could not do what was asked
    │   ├── SubstrateUnavailableError   server unreachable / refused connection
    │   ├── MigrationError              a migration failed to apply
    │   ├── NotFoundError               unknown workspace, actor, token, node ...
    │   └── ConflictError               unique constraint, state conflict
    ├── IdentityError               identity fails closed (invariant 4)
    │   ├── NoActiveRoleCharterError
    │   └── RoleCharterIntegrityError
    ├── ChainError                  the chain or its export is malformed
    └── RefusalError                an anticipated refusal with a stable ``code``
                                    (REFUSAL_CODES: unauthenticated, actor_disabled,
                                    workspace_mismatch, capability_denied, kill_switch,
                                    rate_limited, quota_exceeded, too_large,
                                    constitution_denied, invalid_argument, not_found,
                                    conflict)

Anticipated refusals carry a machine-readable ``code`` and a sentence a person can act on;
anything else that escapes is a crash and is reported generically at the boundary.
"""

from __future__ import annotations

from typing import Any

REFUSAL_CODES = (
    "unauthenticated",
    "workspace_mismatch",
    "capability_denied",
    "kill_switch",
    "rate_limited",
    "too_large",
    "constitution_denied",
    "invalid_argument",
    "not_found",
    "conflict",
    "actor_disabled",
    "quota_exceeded",
)


class IsoKronError(Exception):
    """Base of every error IsoKron raises on purpose."""


class ConfigError(IsoKronError):
    """A setting, DSN or option is invalid."""


class SubstrateError(IsoKronError):
    """The PostgreSQL substrate could not do what was asked."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class SubstrateUnavailableError(SubstrateError):
    """The PostgreSQL server could not be reached."""


class MigrationError(SubstrateError):
    """A migration failed to apply; nothing of it was kept."""


class NotFoundError(SubstrateError):
    """A named workspace, actor, token, node or proposal does not exist."""


class ConflictError(SubstrateError):
    """The write conflicts with the current state (duplicate, already decided, ...)."""


class IdentityError(IsoKronError):
    """The agent's identity could not be verified; fail closed."""


class NoActiveRoleCharterError(IdentityError):
    """The workspace has no active role charter."""


class RoleCharterIntegrityError(IdentityError):
    """The active role charter's content does not match its SHA-256 (or is NULL)."""


class GovernanceIntegrityError(IdentityError):
    """A policy value or capability row does not match the chain event that approved it."""


class ChainError(IsoKronError):
    """The chain or an exported chain bundle is malformed."""


class RefusalError(IsoKronError):
    """An anticipated refusal of a request, with a stable machine-readable code."""

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        if code not in REFUSAL_CODES:
            raise ValueError(f"unknown refusal code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"
