"""Set-up that explains itself: ``hermes memory setup isokron`` and ``hermes memory status``.

Hermes 0.19.0 hands ``hermes memory setup <name>`` entirely to a provider's ``post_setup``
(without it, it only selects the provider). :func:`post_setup` asks for each setting when
someone is at the terminal; without a terminal (a script, CI) it takes the values from the
environment, writes what it has and prints exactly what is missing and what to run.

``hermes memory status`` prints ``get_status_config()`` (:func:`status_config`): each setting
with where it comes from, and a warning naming the variable when the workspace is missing. Its
"Missing:" list is built from the schema's ``env_var`` fields, so :func:`config_schema` gives an
``env_var`` only to the settings still needed: an optional one is never reported missing.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from isokron.errors import ConfigError
from isokron.provider.config import (
    DEFAULT_CACHE_TTL_SECONDS,
    DEFAULT_MCP_ENDPOINT,
    ENV_VARS,
    MAX_CACHE_TTL_SECONDS,
    env_values,
    load_config,
    read_config_file,
    save_config_file,
)
from isokron.substrate.dsn import redact_dsn

ENV_FILE_NAME = ".env"
#: Settings written to ``$HERMES_HOME/.env`` (the secret, and the workspace Hermes reads early).
ENV_FILE_FIELDS = ("service_token", "workspace_id")
NEXT_STEPS = (
    ("isokron up", "start the substrate; prints the reader and gateway DSNs"),
    ("isokron token issue <workspace>", "Kora's service token (shown once)"),
)

_FIELDS: tuple[dict[str, Any], ...] = (
    {
        "key": "reader_dsn",
        "description": "PostgreSQL DSN of the IsoKron reader role (postgresql://...)",
    },
    {"key": "workspace_id", "description": "IsoKron workspace id"},
    {
        "key": "mcp_endpoint",
        "description": "Gateway: 'stdio' (start it here) or its http(s)://host:port/mcp URL",
        "default": DEFAULT_MCP_ENDPOINT,
    },
    {
        "key": "gateway_dsn",
        "description": "PostgreSQL DSN of the IsoKron gateway role (needed for 'stdio')",
    },
    {
        "key": "service_token",
        "description": "Kora's service token (wsk_..., from `isokron token issue`)",
        "secret": True,
    },
    {
        "key": "cache_ttl_seconds",
        "description": f"Seconds governance reads are cached (0-{MAX_CACHE_TTL_SECONDS})",
        "default": str(DEFAULT_CACHE_TTL_SECONDS),
    },
)


def current_values(hermes_home: str | Path | None) -> dict[str, Any]:
    """The settings as a session would see them: ``isokron.json`` overridden by the
    environment (``${VAR}`` left unexpanded when the variable is unset)."""
    try:
        values = read_config_file(hermes_home)
    except ConfigError:
        values = {}
    values.update(env_values())
    return values


def required_fields(values: Mapping[str, Any]) -> list[str]:
    """The settings a session needs, given the others (``gateway_dsn`` only for 'stdio')."""
    needed = ["reader_dsn", "workspace_id", "service_token"]
    if str(values.get("mcp_endpoint") or DEFAULT_MCP_ENDPOINT) == "stdio":
        needed.append("gateway_dsn")
    return needed


def config_schema(hermes_home: str | Path | None) -> list[dict[str, Any]]:
    """Hermes's ``get_config_schema`` list; ``env_var`` only on settings still missing."""
    values = current_values(hermes_home)
    needed = set(required_fields(values))
    schema = []
    for field in _FIELDS:
        entry = dict(field)
        key = entry["key"]
        entry["required"] = key in needed
        if key in needed and not values.get(key):
            entry["env_var"] = ENV_VARS[key]
        schema.append(entry)
    return schema


def missing_settings(hermes_home: str | Path | None) -> list[str]:
    """The environment variables of the required settings that have no value."""
    values = current_values(hermes_home)
    return [ENV_VARS[k] for k in required_fields(values) if not values.get(k)]


def status_config(hermes_home: str | Path | None) -> dict[str, str]:
    """What ``hermes memory status`` shows: each setting, where it comes from, and a warning
    naming the variable of each required setting that is missing."""
    from_file = _file_values(hermes_home)
    env = env_values()
    shown: dict[str, str] = {}
    for field in _FIELDS:
        key, var = field["key"], ENV_VARS[field["key"]]
        if key in env:
            value, source = env[key], f"from {var}"
        elif key in from_file:
            value, source = from_file[key], "from isokron.json"
        elif "default" in field:
            value, source = field["default"], "default"
        else:
            value, source = "", ""
        if value and field.get("secret"):
            value = "set"
        elif value and key.endswith("_dsn"):
            value = redact_dsn(str(value))
        shown[key] = f"{value} ({source})" if value else "not set"
    missing = missing_settings(hermes_home)
    if missing:
        shown["warning"] = (
            f"IsoKron is off until {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} set (in $HERMES_HOME/.env or the "
            "environment); `hermes memory setup isokron` writes them"
        )
    return shown


def post_setup(
    hermes_home: str,
    hermes_config: dict[str, Any],
    *,
    interactive: bool | None = None,
    ask: Callable[[str, str | None, bool], str] | None = None,
    save_hermes_config: Callable[[dict[str, Any]], None] | None = None,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """``hermes memory setup isokron``: collect the settings, write ``isokron.json`` and
    ``.env``, select the provider in ``config.yaml``; returns what is still missing.

    Interactive (a terminal) it asks for each setting, showing the current value; otherwise it
    takes what the environment holds and prints what to set and run for the rest.
    """
    interactive = sys.stdin.isatty() if interactive is None else interactive
    ask = ask or _ask
    values = current_values(hermes_home)
    if interactive:
        echo("\n  Configuring IsoKron (Enter keeps the value in brackets):\n")
        for field in config_schema(hermes_home):
            key = field["key"]
            current = values.get(key) or field.get("default")
            shown = "set, Enter keeps it" if field.get("secret") and current else current
            answer = ask(
                field["description"], str(shown) if shown else None, bool(field.get("secret"))
            )
            if answer and answer != shown:
                values[key] = answer
    plain = {k: v for k, v in values.items() if k not in ENV_FILE_FIELDS and v not in (None, "")}
    save_config_file(plain, hermes_home)
    env_writes = {ENV_VARS[k]: str(values[k]) for k in ENV_FILE_FIELDS if values.get(k)}
    if env_writes:
        write_env_file(Path(hermes_home) / ENV_FILE_NAME, env_writes)
    memory = hermes_config.setdefault("memory", {})
    if isinstance(memory, dict):
        memory["provider"] = "isokron"
    if save_hermes_config is not None:
        save_hermes_config(hermes_config)
    else:
        from hermes_cli.config import save_config

        save_config(hermes_config)
    for var, value in env_writes.items():
        os.environ.setdefault(var, value)
    missing = missing_settings(hermes_home)
    _report(hermes_home, missing, echo)
    return missing


def _report(hermes_home: str, missing: list[str], echo: Callable[[str], None]) -> None:
    echo("\n  Memory provider: isokron (selected in config.yaml)")
    echo(f"  Settings: {Path(hermes_home) / 'isokron.json'} and {Path(hermes_home) / '.env'}")
    if not missing:
        try:
            config = load_config(hermes_home)
        except ConfigError as exc:
            echo(f"\n  ✗ The settings are not valid yet: {exc}\n")
            return
        echo(
            f"  ✓ IsoKron is ready: workspace {config.workspace_id}, gateway {config.mcp_endpoint}"
        )
        echo("  Start a new Hermes session to use it.\n")
        return
    echo(f"\n  ✗ IsoKron stays off until these are set: {', '.join(missing)}")
    echo("  To get them:")
    for command, what in NEXT_STEPS:
        echo(f"    {command:<36} # {what}")
    assignments = " ".join(f"{var}=..." for var in missing)
    echo(f"  Then, without prompts:  {assignments} hermes memory setup isokron")
    echo(f"  (or put them in {Path(hermes_home) / '.env'})\n")


def write_env_file(path: Path, updates: Mapping[str, str]) -> None:
    """Set ``updates`` in a dotenv file (other lines kept), mode 0600: it holds the token."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    done: set[str] = set()
    kept = []
    for line in lines:
        name = line.split("=", 1)[0].strip() if "=" in line else ""
        if name in updates:
            kept.append(f"{name}={updates[name]}")
            done.add(name)
        else:
            kept.append(line)
    kept += [f"{name}={value}" for name, value in updates.items() if name not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(kept) + "\n")
    os.chmod(path, 0o600)


def _file_values(hermes_home: str | Path | None) -> dict[str, Any]:
    try:
        return read_config_file(hermes_home)
    except ConfigError:
        return {}


def _ask(label: str, default: str | None, secret: bool) -> str:
    suffix = f" [{default}]" if default else ""
    prompt = f"  {label}{suffix}: "
    value = getpass.getpass(prompt) if secret else input(prompt)
    return value.strip() or (default or "")
