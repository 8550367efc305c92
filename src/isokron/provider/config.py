"""The provider's configuration: a validated value object, where it comes from, and its schema.

Sources, lowest precedence first (each later source overrides single fields of the earlier):

1. the defaults below (``DEFAULT_*``);
2. ``$HERMES_HOME/isokron.json`` — written by ``hermes memory setup`` through
   :func:`save_config_file`; string values may contain ``${VAR}``, expanded from the
   environment when the file is read (an unset variable is an error, never an empty string);
3. environment variables (``ENV_VARS``), e.g. ``ISOKRON_READER_DSN`` — Hermes loads
   ``$HERMES_HOME/.env`` into the environment before it starts the provider;
4. values given explicitly in code (``load_config(overrides=...)``).

The workspace is resolved in this order: the ``workspace_id`` keyword a host passes to
``initialize()``, then ``ISOKRON_WORKSPACE_ID``, then ``workspace_id`` in ``isokron.json``.
Without one the provider reports itself unavailable and Hermes does not activate it.

The service token is a secret: it is read only from ``KORA_SERVICE_TOKEN`` (or given in code),
never written to ``isokron.json``, and never shown by ``repr`` or in logs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from isokron.errors import ConfigError
from isokron.substrate.dsn import validate_dsn

CONFIG_FILE_NAME = "isokron.json"
DEFAULT_MCP_ENDPOINT = "stdio"
DEFAULT_CACHE_TTL_SECONDS = 60
MAX_CACHE_TTL_SECONDS = 3600
DEFAULT_CONNECT_TIMEOUT_SECONDS = 2.0
MAX_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_HOOK_TIMEOUT_SECONDS = 5.0
#: Hermes joins a provider's ``prefetch`` thread for 8 s; every wait of ours stays below that.
MAX_HOOK_TIMEOUT_SECONDS = 7.5
TOKEN_PREFIX = "wsk_"

#: Config field -> the environment variable that sets it.
ENV_VARS: dict[str, str] = {
    "reader_dsn": "ISOKRON_READER_DSN",
    "gateway_dsn": "ISOKRON_GATEWAY_DSN",
    "mcp_endpoint": "ISOKRON_MCP_ENDPOINT",
    "workspace_id": "ISOKRON_WORKSPACE_ID",
    "service_token": "KORA_SERVICE_TOKEN",
    "cache_ttl_seconds": "ISOKRON_CACHE_TTL_SECONDS",
    "connect_timeout_seconds": "ISOKRON_CONNECT_TIMEOUT_SECONDS",
    "hook_timeout_seconds": "ISOKRON_HOOK_TIMEOUT_SECONDS",
}
SECRET_FIELDS = frozenset({"service_token"})

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WORKSPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")

McpTransport = Literal["stdio", "http"]


class IsoKronProviderConfig(BaseModel):
    """Validated settings of one provider instance (immutable; unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    reader_dsn: str = Field(description="postgresql:// DSN of the read-only reader role")
    mcp_endpoint: str = Field(
        default=DEFAULT_MCP_ENDPOINT,
        description=(
            "where the gateway is: 'stdio' (start `python -m isokron.gateway` as a child "
            "process), 'stdio:<command line>' (start that command), or an http(s):// URL"
        ),
    )
    gateway_dsn: str | None = Field(
        default=None, description="postgresql:// DSN of the gateway role (for 'stdio' only)"
    )
    workspace_id: str | None = Field(default=None, description="the IsoKron workspace id")
    service_token: SecretStr | None = Field(
        default=None, description="Kora's wsk_ service token for the gateway"
    )
    cache_ttl_seconds: int = Field(
        default=DEFAULT_CACHE_TTL_SECONDS, ge=0, le=MAX_CACHE_TTL_SECONDS
    )
    connect_timeout_seconds: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_SECONDS, gt=0, le=MAX_CONNECT_TIMEOUT_SECONDS
    )
    hook_timeout_seconds: float = Field(
        default=DEFAULT_HOOK_TIMEOUT_SECONDS, gt=0, le=MAX_HOOK_TIMEOUT_SECONDS
    )

    @field_validator("reader_dsn", "gateway_dsn")
    @classmethod
    def _dsn_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_dsn(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("mcp_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value == "stdio":
            return value
        if value.startswith("stdio:"):
            if not shlex.split(value[len("stdio:") :]):
                raise ValueError("'stdio:' must be followed by the command that starts the gateway")
            return value
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.hostname:
            return value
        raise ValueError(
            f"MCP endpoint {value!r} is not supported; use 'stdio', 'stdio:<command>' "
            "or an http(s)://host:port/mcp URL"
        )

    @field_validator("workspace_id")
    @classmethod
    def _workspace(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _WORKSPACE_RE.match(value):
            raise ValueError(
                f"workspace id {value!r} must be 1-200 letters, digits, '_', '.', ':' or '-'"
            )
        return value

    @field_validator("service_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().startswith(TOKEN_PREFIX):
            raise ValueError(f"the service token must start with {TOKEN_PREFIX!r}")
        return value

    @model_validator(mode="after")
    def _stdio_needs_gateway_dsn(self) -> IsoKronProviderConfig:
        if self.mcp_endpoint == "stdio" and self.gateway_dsn is None:
            raise ValueError(
                "mcp_endpoint 'stdio' starts the gateway itself and needs gateway_dsn "
                f"({ENV_VARS['gateway_dsn']})"
            )
        return self

    @property
    def transport(self) -> McpTransport:
        """``"stdio"`` or ``"http"`` (for both http:// and https://)."""
        return "stdio" if self.mcp_endpoint.startswith("stdio") else "http"

    def token(self) -> str | None:
        """The service token in clear text, for the one place that sends it."""
        return self.service_token.get_secret_value() if self.service_token else None

    def with_workspace(self, workspace_id: str) -> IsoKronProviderConfig:
        """A copy naming another workspace (validated like any other value)."""
        return IsoKronProviderConfig.model_validate(
            {**self.model_dump(), "service_token": self.token(), "workspace_id": workspace_id}
        )


def expand_env(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace every ``${VAR}`` in a string (recursively in lists and dicts).

    Raises:
        ConfigError: a referenced variable is not set.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"the IsoKron config refers to ${{{name}}}, which is not set")
            return env[name]

        return _VAR_RE.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


def config_file_path(hermes_home: str | Path) -> Path:
    """Where ``hermes memory setup`` keeps the provider's non-secret settings."""
    return Path(hermes_home).expanduser() / CONFIG_FILE_NAME


def read_config_file(
    hermes_home: str | Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The settings in ``$HERMES_HOME/isokron.json`` with ``${VAR}`` expanded ({} if absent)."""
    if hermes_home is None:
        return {}
    path = config_file_path(hermes_home)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object of settings")
    return expand_env(data, environ)


def env_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given by environment variables (unset and empty ones are skipped)."""
    env = os.environ if environ is None else environ
    return {field: env[var] for field, var in ENV_VARS.items() if env.get(var, "").strip()}


def load_config(
    hermes_home: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> IsoKronProviderConfig:
    """Merge file, environment and explicit values (in that order) and validate them.

    Raises:
        ConfigError: a value is invalid or a required one is missing; the message names the
            field and the environment variable that sets it.
    """
    merged: dict[str, Any] = {}
    merged.update(read_config_file(hermes_home, environ))
    merged.update(env_values(environ))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return IsoKronProviderConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line per problem, naming the environment variable of each field."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        var = ENV_VARS.get(loc)
        where = f"{loc} ({var})" if var else loc
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown setting (check its spelling)"
        lines.append(f"{where}: {message}")
    return "invalid IsoKron provider config: " + "; ".join(lines)


def save_config_file(values: Mapping[str, Any], hermes_home: str | Path) -> Path:
    """Write non-secret settings to ``$HERMES_HOME/isokron.json`` (merged over what is there).

    Secrets are dropped: the token belongs in ``$HERMES_HOME/.env`` as ``KORA_SERVICE_TOKEN``.
    The file is written with mode 0600 because DSNs may carry passwords.

    Raises:
        ConfigError: a key is not a setting of the provider.
    """
    allowed = set(IsoKronProviderConfig.model_fields) - SECRET_FIELDS
    unknown = sorted(set(values) - allowed - SECRET_FIELDS)
    if unknown:
        raise ConfigError(f"unknown IsoKron setting(s): {', '.join(unknown)}")
    path = config_file_path(hermes_home)
    current: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            current = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            current = {}
    current.update({k: v for k, v in values.items() if k in allowed and v not in (None, "")})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(current, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path
