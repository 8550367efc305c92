"""The provider's configuration: validation, sources, ${VAR} expansion, schema and file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from isokron.errors import ConfigError
from isokron.provider.config import (
    ENV_VARS,
    MAX_CONNECT_TIMEOUT_SECONDS,
    MAX_HOOK_TIMEOUT_SECONDS,
    IsoKronProviderConfig,
    expand_env,
    load_config,
    save_config_file,
)
from isokron.provider.gateway_client import GatewayClient, gateway_command
from isokron.provider.setup import config_schema

READER = "postgresql://isokron_reader@db.example:5432/isokron"
GATEWAY = "postgresql://isokron_gateway:s3cret@db.example:5432/isokron"
TOKEN = "wsk_" + "A" * 40
HERMES_BUDGET_SECONDS = 8.0  # agent/memory_manager.py: _EXTERNAL_PREFETCH_TIMEOUT_S


def base(**extra: object) -> dict[str, object]:
    return {"reader_dsn": READER, "gateway_dsn": GATEWAY, "workspace_id": "acme", **extra}


def test_defaults_and_transport() -> None:
    config = IsoKronProviderConfig.model_validate(base())
    assert config.mcp_endpoint == "stdio" and config.transport == "stdio"
    assert config.cache_ttl_seconds == 60
    http = IsoKronProviderConfig.model_validate(base(mcp_endpoint="https://gw.example/mcp"))
    assert http.transport == "http"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("reader_dsn", "mysql://u@h/db", "scheme"),
        ("gateway_dsn", "http://h/db", "scheme"),
        ("mcp_endpoint", "ftp://gw/mcp", "not supported"),
        ("mcp_endpoint", "stdio:", "followed by the command"),
        ("cache_ttl_seconds", 3601, "less than or equal to 3600"),
        ("cache_ttl_seconds", -1, "greater than or equal to 0"),
        ("connect_timeout_seconds", 30, "less than or equal to 5"),
        ("hook_timeout_seconds", 8, "less than or equal to 7.5"),
        ("service_token", "sk-not-a-workspace-key", "must start with 'wsk_'"),
        ("workspace_id", "has spaces", "must be 1-200"),
        ("cache_tll_seconds", 5, "unknown setting"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(
    field: str, value: object, fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides=base(**{field: value}), environ={})
    assert field in str(err.value) and fragment in str(err.value)


def test_stdio_needs_the_gateway_dsn_but_http_does_not() -> None:
    with pytest.raises(ConfigError, match="gateway_dsn"):
        load_config(None, overrides={"reader_dsn": READER}, environ={})
    config = load_config(
        None,
        overrides={"reader_dsn": READER, "mcp_endpoint": "http://127.0.0.1:8765/mcp"},
        environ={},
    )
    assert config.gateway_dsn is None


def test_token_is_secret_in_repr_and_dump() -> None:
    config = IsoKronProviderConfig.model_validate(base(service_token=TOKEN))
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())
    assert config.token() == TOKEN


def test_sources_file_then_environment_then_code(tmp_path: Path) -> None:
    (tmp_path / "isokron.json").write_text(
        json.dumps({"reader_dsn": "${PGURL}", "workspace_id": "from-file", "cache_ttl_seconds": 10})
    )
    environ = {
        "PGURL": READER,
        ENV_VARS["workspace_id"]: "from-env",
        ENV_VARS["gateway_dsn"]: GATEWAY,
    }
    config = load_config(tmp_path, environ=environ)
    assert config.reader_dsn == READER  # ${VAR} expanded
    assert config.workspace_id == "from-env"  # environment beats the file
    assert config.cache_ttl_seconds == 10  # the file fills what the environment does not
    config = load_config(tmp_path, environ=environ, overrides={"workspace_id": "from-code"})
    assert config.workspace_id == "from-code"


def test_unset_variable_is_an_error_not_an_empty_string(tmp_path: Path) -> None:
    (tmp_path / "isokron.json").write_text(json.dumps({"reader_dsn": "${NOT_SET_ANYWHERE}"}))
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        load_config(tmp_path, environ={})
    assert expand_env({"a": ["x${A}y"]}, {"A": "1"}) == {"a": ["x1y"]}


def test_every_setting_has_an_environment_variable_and_hermes_schema_names_real_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    assert set(ENV_VARS) == set(IsoKronProviderConfig.model_fields)
    schema = config_schema(tmp_path)
    assert {f["key"] for f in schema} <= set(IsoKronProviderConfig.model_fields)
    secrets = [f for f in schema if f.get("secret")]
    assert [f["key"] for f in secrets] == ["service_token"]
    # `hermes memory status` lists every schema field with an env_var as missing: only the
    # required ones (nothing set yet) carry one.
    with_var = {f["key"] for f in schema if "env_var" in f}
    assert with_var == {"reader_dsn", "workspace_id", "service_token", "gateway_dsn"}
    assert all(f["env_var"] == ENV_VARS[f["key"]] for f in schema if "env_var" in f)
    monkeypatch.setenv("ISOKRON_MCP_ENDPOINT", "http://127.0.0.1:8765/mcp")
    monkeypatch.setenv("ISOKRON_READER_DSN", READER)
    with_var = {f["key"] for f in config_schema(tmp_path) if "env_var" in f}
    assert with_var == {"workspace_id", "service_token"}  # no gateway DSN over HTTP


def test_save_config_file_keeps_secrets_out_and_is_private(tmp_path: Path) -> None:
    path = save_config_file(
        {"reader_dsn": READER, "workspace_id": "acme", "service_token": TOKEN}, tmp_path
    )
    saved = json.loads(path.read_text())
    assert saved == {"reader_dsn": READER, "workspace_id": "acme"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    save_config_file({"cache_ttl_seconds": "30"}, tmp_path)  # merged, as the setup wizard sends
    assert json.loads(path.read_text())["workspace_id"] == "acme"
    with pytest.raises(ConfigError, match="unknown"):
        save_config_file({"nonsense": 1}, tmp_path)


def test_every_wait_is_configured_below_hermes_prefetch_budget() -> None:
    assert MAX_CONNECT_TIMEOUT_SECONDS < HERMES_BUDGET_SECONDS
    assert MAX_HOOK_TIMEOUT_SECONDS < HERMES_BUDGET_SECONDS
    config = IsoKronProviderConfig.model_validate(base())
    assert config.connect_timeout_seconds < config.hook_timeout_seconds < HERMES_BUDGET_SECONDS


def test_spawned_gateway_gets_dsns_in_its_environment_never_on_its_command_line() -> None:
    config = IsoKronProviderConfig.model_validate(base(service_token=TOKEN))
    command, args, env = gateway_command(config)
    assert "s3cret" not in " ".join([command, *args])
    assert env == {"ISOKRON_READER_DSN": READER, "ISOKRON_GATEWAY_DSN": GATEWAY}
    assert GatewayClient(config).describe_endpoint() == "stdio (isokron.gateway)"
    custom = IsoKronProviderConfig.model_validate(
        base(mcp_endpoint="stdio:my-gateway --flag 'a b'")
    )
    assert gateway_command(custom) == ("my-gateway", ["--flag", "a b"], {})
