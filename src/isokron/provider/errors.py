"""Errors of the memory provider, under IsoKron's one base error.

    IsoKronError                         (isokron.errors)
    └── ProviderError                    the provider could not do what a hook or tool asked
        └── IsoKronMCPInvocationError    a call to the gateway (MCP) did not succeed  (.tool)
            ├── GatewayUnavailableError  could not connect, connection lost, or timed out
            └── GatewayRefusedError      the gateway refused the call   (.code, .message)

Identity errors (``NoActiveRoleCharterError``, ``RoleCharterIntegrityError``) and substrate
errors (``SubstrateUnavailableError`` ...) come from :mod:`isokron.errors` unchanged. None of
these ever escapes a Hermes hook: the provider catches them at the hook boundary and logs them.
"""

from __future__ import annotations

import re

from isokron.errors import REFUSAL_CODES, IsoKronError

#: Codes the gateway uses besides the refusal codes: the database is down, or a crash.
GATEWAY_ONLY_CODES = ("unavailable", "internal")
_REFUSAL_TEXT_RE = re.compile(r"^\s*\[(?P<code>[a-z_]+)\]\s*(?P<message>.*)$", re.DOTALL)


class ProviderError(IsoKronError):
    """The memory provider could not do what a hook or a tool asked."""


class IsoKronMCPInvocationError(ProviderError):
    """A call to the IsoKron gateway did not succeed."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(message)
        self.tool = tool


class GatewayUnavailableError(IsoKronMCPInvocationError):
    """The gateway could not be reached, the connection broke, or the call timed out.

    The write may be retried with the same idempotency key: the gateway returns the first
    result if the original call did land. ``starting`` is True when the session was still being
    opened (a gateway process starting up), which is not an outage.
    """

    def __init__(self, tool: str, message: str, *, starting: bool = False) -> None:
        super().__init__(tool, message)
        self.starting = starting


class GatewayRefusedError(IsoKronMCPInvocationError):
    """The gateway refused the call with a stable machine-readable ``code``
    (``retry_after_seconds`` comes with ``rate_limited``)."""

    def __init__(
        self, tool: str, code: str, message: str, *, retry_after_seconds: float | None = None
    ) -> None:
        super().__init__(tool, f"[{code}] {message}")
        self.code = code
        self.message = message
        self.retry_after_seconds = retry_after_seconds


def refusal_from_text(tool: str, text: str) -> GatewayRefusedError:
    """Parse a gateway tool-error text ``"[code] sentence"`` into a :class:`GatewayRefusedError`.

    Text without a recognised ``[code]`` prefix becomes code ``"error"`` with the text kept.
    """
    match = _REFUSAL_TEXT_RE.match(text or "")
    if match is not None and match.group("code") in (*REFUSAL_CODES, *GATEWAY_ONLY_CODES):
        return GatewayRefusedError(tool, match.group("code"), match.group("message").strip())
    return GatewayRefusedError(tool, "error", (text or "the gateway reported an error").strip())
