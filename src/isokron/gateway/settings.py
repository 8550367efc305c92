"""How a gateway process is configured: one small frozen value object and its defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from isokron.errors import ConfigError
from isokron.substrate.dsn import validate_dsn

#: Environment variable the stdio transport reads its service token from.
TOKEN_ENV = "KORA_SERVICE_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Seconds a workspace's policies, capability matrix and compiled constitution (and a token's
#: authentication) are served from memory. It is the longest a kill switch, a capability
#: change, a new constitution revision or a token revocation can take to apply.
DEFAULT_GOVERNANCE_TTL_SECONDS = 1.0
MAX_GOVERNANCE_TTL_SECONDS = 60.0
#: Path of the streamable HTTP endpoint, and of the health endpoint beside it.
MCP_PATH = "/mcp"
HEALTH_PATH = "/healthz"
#: Largest HTTP request body accepted, enforced while reading. Four times the constitution's
#: hard ceiling on a write (1 MiB), so that an oversized write still reaches the pipeline and is
#: refused there with ``too_large`` and a denial event; past it, HTTP 413 (``too_large``).
DEFAULT_MAX_REQUEST_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_POOL_MAX_SIZE = 10
#: Seconds between two passes of the gateway's maintenance (0: off; ``isokron maintain``).
DEFAULT_MAINTAIN_INTERVAL_SECONDS = 300.0

Transport = Literal["stdio", "http"]
TRANSPORTS: tuple[Transport, ...] = ("stdio", "http")


@dataclass(frozen=True)
class GatewaySettings:
    """Everything a gateway process needs to start.

    ``stdio_token`` is the service token used by the stdio transport; when ``None`` it is read
    from ``KORA_SERVICE_TOKEN`` once, when the settings are made. Over HTTP every request
    carries its own token and ``stdio_token`` is ignored.
    """

    reader_dsn: str
    gateway_dsn: str
    transport: Transport = "stdio"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    governance_ttl_seconds: float = DEFAULT_GOVERNANCE_TTL_SECONDS
    maintain_interval_seconds: float = DEFAULT_MAINTAIN_INTERVAL_SECONDS
    stdio_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        validate_dsn(self.reader_dsn)
        validate_dsn(self.gateway_dsn)
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"transport {self.transport!r} is not supported; use one of {list(TRANSPORTS)}"
            )
        if not self.host:
            raise ConfigError("the HTTP host is empty; use 127.0.0.1 to listen locally")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigError(f"the HTTP port must be a whole number, not {self.port!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"the HTTP port must be between 1 and 65535, not {self.port}")
        ttl = self.governance_ttl_seconds
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise ConfigError(f"governance_ttl_seconds must be a number, not {ttl!r}")
        if not 0 <= ttl <= MAX_GOVERNANCE_TTL_SECONDS:
            raise ConfigError(
                f"governance_ttl_seconds must be between 0 and {MAX_GOVERNANCE_TTL_SECONDS:g} "
                f"(it bounds how long a kill switch or a revocation takes to apply), not {ttl}"
            )
        interval = self.maintain_interval_seconds
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise ConfigError(
                f"maintain_interval_seconds must be 0 (off) or a positive number, not {interval!r}"
            )
        if self.stdio_token is None:
            object.__setattr__(self, "stdio_token", os.environ.get(TOKEN_ENV) or None)
