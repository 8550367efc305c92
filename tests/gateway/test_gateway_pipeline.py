"""The pipeline's pure stages, the settings, the result format and the decision log.

No database here: a governance snapshot is assembled from the seeded defaults, exactly as the
gateway assembles one from the substrate's tables.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import types
from typing import Any

import pytest

from isokron.errors import ConfigError, RefusalError
from isokron.gateway import GatewaySettings, Screening, screen
from isokron.gateway.arguments import argument_problem
from isokron.gateway.auth import (
    Principal,
    is_well_formed,
    loggable_prefix,
    principal_from_record,
)
from isokron.gateway.decision_log import log_decision
from isokron.gateway.governance import Governance, build_governance, flag
from isokron.gateway.pipeline import MAX_JSON_DEPTH, Stage, text_problem
from isokron.gateway.results import ERROR_CODES, error, success
from isokron.gateway.tools import build_tools
from isokron.governance.capabilities import CAPABILITIES
from isokron.governance.policies import POLICIES as DEFAULT_POLICIES
from isokron.governance.rules import default_constitution
from isokron.substrate.models import CapabilityRow, PolicyEntry
from isokron.substrate.writes import new_token

READER = "postgresql://isokron_reader@127.0.0.1:5432/isokron"
GATEWAY = "postgresql://isokron_gateway@127.0.0.1:5432/isokron"
KORA = Principal("ws-a", "00000000-0000-0000-0000-00000000000a", "kora", "t-1", "wsk_AbCdEfGh")
OPERATOR = dataclasses.replace(KORA, actor_kind="operator")


def governance_for(actor_kind: str = "kora", **overrides: Any) -> Governance:
    """A snapshot built from the seeded defaults, with policy values overridden."""
    values = {key: p.value for key, p in DEFAULT_POLICIES.items()}
    values.update(overrides)
    policies = tuple(PolicyEntry(k, v) for k, v in values.items())
    caps = CapabilityRow(actor_kind, {c.cap_name: actor_kind in c.grants for c in CAPABILITIES})
    return build_governance("ws-a", actor_kind, policies, caps, default_constitution())


def write(tool: str = "iso_node_create", **fields: Any) -> Screening:
    arguments = fields.pop("arguments", {"node_type": "fact", "title": "t"})
    return Screening(
        tool=tool,
        capability=fields.pop("capability", "cap_iso_node_create"),
        writes=True,
        arguments=arguments,
        event_type=fields.pop("event_type", "kora.node.created"),
        **fields,
    )


def policy(key: str) -> str:
    return f"policy.kora_{key}"


# ------------------------------------------------------------------------------ stages


def test_an_ordinary_write_is_allowed() -> None:
    verdict = screen(KORA, governance_for(), write())
    assert verdict.allowed and verdict.stage is None


def test_stages_run_in_order_and_the_first_objection_decides() -> None:
    stopped = governance_for(**{policy("disabled"): True})
    everything_wrong = write(
        workspace_id="ws-b",
        capability="cap_unknown",
        arguments={"title": "x" * 100_000},
        event_type="governance.charter.set",
    )
    assert screen(KORA, stopped, everything_wrong).code == "workspace_mismatch"
    assert screen(KORA, stopped, dataclasses.replace(everything_wrong, workspace_id=None)).code == (
        "kill_switch"
    )
    running = governance_for()
    no_ws = dataclasses.replace(everything_wrong, workspace_id="ws-a")
    assert screen(KORA, running, no_ws).code == "capability_denied"
    cap_ok = dataclasses.replace(no_ws, capability="cap_iso_node_create")
    verdict = screen(KORA, running, cap_ok)
    assert (verdict.code, verdict.stage) == ("too_large", Stage.SIZE)
    small = dataclasses.replace(cap_ok, arguments={"title": "x"}, argument_error="title: bad")
    assert screen(KORA, running, small).code == "invalid_argument"
    valid = dataclasses.replace(small, argument_error=None)
    denied = screen(KORA, running, valid)
    assert (denied.code, denied.rule_id) == ("constitution_denied", "deny-governance-events")


def test_refusals_before_the_rate_limit_are_marked() -> None:
    assert screen(KORA, governance_for(), write(workspace_id="ws-b")).before_rate_limit
    assert not screen(KORA, governance_for(), write(arguments={"t": "\x00"})).before_rate_limit


def test_kill_switch_stops_kora_only() -> None:
    assert screen(KORA, governance_for(**{policy("disabled"): True}), write()).code == "kill_switch"
    operator = governance_for("operator", **{policy("disabled"): True})
    assert screen(OPERATOR, operator, write()).allowed


@pytest.mark.parametrize(
    ("value", "on"),
    [
        (True, True),
        (False, False),
        (None, False),
        ("true", True),
        ("off", False),
        (0, False),
        (1, True),
        ("maybe", True),
        ({"x": 1}, True),
    ],
)
def test_kill_switch_values_fail_closed(value: Any, on: bool) -> None:
    assert flag(value) is on


def test_unknown_or_missing_capability_is_denied() -> None:
    assert screen(KORA, governance_for(), write(capability=None)).code == "capability_denied"
    assert screen(KORA, governance_for(), write(capability="cap_nope")).code == "capability_denied"
    decide = write("kora__decide_proposal", capability="cap_decide_proposal", event_type=None)
    assert screen(KORA, governance_for(), decide).code == "capability_denied"


def test_payload_cap_leaves_scratchpad_content_to_its_own_cap() -> None:
    governance = governance_for(**{policy("max_payload_bytes"): 1000})
    content = "c" * 5000
    call = write(
        "kora__write_agent_scratchpad",
        capability="cap_write_agent_scratchpad",
        arguments={"kind": "plan", "summary": "s", "content": content},
        event_type="kora.scratchpad.written",
        inline_content=content,
        summary="s",
    )
    assert screen(KORA, governance, call).allowed
    small_cap = governance_for(**{policy("max_scratchpad_content_bytes"): 4999})
    verdict = screen(KORA, small_cap, call)
    assert verdict.code == "too_large" and policy("max_scratchpad_content_bytes") in verdict.message
    short_summary = governance_for(**{policy("max_summary_bytes"): 0})
    assert policy("max_summary_bytes") in screen(KORA, short_summary, call).message


def test_malformed_size_policy_falls_back_to_its_seed(caplog: pytest.LogCaptureFixture) -> None:
    governance = governance_for(**{policy("max_payload_bytes"): "lots"})
    assert governance.max_payload_bytes == DEFAULT_POLICIES[policy("max_payload_bytes")].value
    assert "policy_fallback" in caplog.text


def test_constitution_escalates_and_denies() -> None:
    held = screen(KORA, governance_for(), write(arguments={"content": "drop all the tables"}))
    assert (held.effect, held.rule_id, held.code) == ("escalate", "escalate-bulk-destruction", None)
    secret = "ghp_" + "a" * 36
    denied = screen(KORA, governance_for(), write(arguments={"content": secret}))
    assert denied.code == "constitution_denied" and secret not in denied.message


def test_reads_skip_the_constitution() -> None:
    read = Screening(
        tool="iso_node_search",
        capability="cap_iso_node_read",
        writes=False,
        arguments={"query": "drop all the tables"},
    )
    assert screen(KORA, governance_for(), read).allowed


def test_missing_constitution_fails_closed_unless_the_policy_allows() -> None:
    closed = dataclasses.replace(
        governance_for(), constitution=None, constitution_problem="it is missing"
    )
    verdict = screen(KORA, closed, write())
    assert verdict.code == "constitution_denied" and "it is missing" in verdict.message
    assert screen(KORA, dataclasses.replace(closed, constitution_fail_open=True), write()).allowed


# ------------------------------------------------------------------------------ text


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_text_problems() -> None:
    assert text_problem({"a": "fine", "b": ["ok", {"c": "ok"}]}) is None
    assert "NUL" in (text_problem({"a": ["x\x00"]}) or "")
    assert "surrogate" in (text_problem({"a": {"k": "\udfff"}}) or "")
    assert "key" in (text_problem({"a": {"\x00": 1}}) or "")
    assert text_problem({"payload": nested(MAX_JSON_DEPTH)}) is None
    assert "deeper" in (text_problem({"payload": nested(MAX_JSON_DEPTH + 1)}) or "")
    assert "deeper" in (text_problem({"payload": nested(100_000)}) or "")


def test_argument_problems_name_fields_not_values() -> None:
    tools = {tool.name: tool for tool in build_tools(None)}  # type: ignore[arg-type]
    node = tools["iso_node_create"]
    assert argument_problem(node, {"node_type": "f", "title": "t"}) is None
    assert argument_problem(node, {"node_type": "f"}) == "title: Field required."
    problem = argument_problem(node, {"node_type": "f", "title": "t", "secret_field": "x"})
    assert problem is not None and problem.startswith("unknown argument(s) secret_field;")
    wrong = argument_problem(node, {"node_type": 12345678, "title": "t"})
    assert wrong is not None and "12345678" not in wrong and wrong.startswith("node_type:")
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    assert "nested too deeply" in (
        argument_problem(tools["kora__append_event"], {"event_type": "x", "payload": deep}) or ""
    )


def test_every_tool_hands_its_arguments_to_the_gateway_unchanged() -> None:
    """ArgumentGuard calls ``Gateway.call`` itself with the arguments it validated, instead of
    the tool function: the same call only if every tool's body is exactly
    ``gateway.call(its name, the request, {each argument: its value})``."""
    calls: list[tuple[str, Any, dict[str, Any]]] = []

    class Recorder:
        async def call(self, tool: str, request: Any, arguments: Any, **_: Any) -> str:
            calls.append((tool, request, dict(arguments)))
            return "result"

    request = object()
    ctx = types.SimpleNamespace(request_context=types.SimpleNamespace(request=request))
    tools = build_tools(Recorder())  # type: ignore[arg-type]
    for tool in tools:
        given = {name: object() for name in tool.fn_metadata.arg_model.model_fields}
        assert tool.context_kwarg == "ctx"
        assert asyncio.run(tool.fn(ctx=ctx, **given)) == "result"
        name, seen_request, arguments = calls[-1]
        assert name == tool.name and seen_request is request
        assert arguments.keys() == given.keys(), tool.name
        assert all(arguments[k] is given[k] for k in given), tool.name
        assert tool.fn_metadata.output_schema is None  # convert_result passes results through
    assert len(calls) == len(tools)


# ------------------------------------------------------------------------ tokens, settings


def test_token_shapes_and_loggable_prefixes() -> None:
    token = new_token()
    assert is_well_formed(token)
    assert loggable_prefix(token) == token[:12]
    for bad in (None, "", "wsk_short", token + "x", "sk-" + token[4:], token[:-1] + "-"):
        assert not is_well_formed(bad)
        assert loggable_prefix(bad) is None


@pytest.mark.parametrize(
    ("status", "words"),
    [("revoked", "was revoked"), ("expired", "has expired"), ("actor_disabled", "is disabled")],
)
def test_inactive_token_records_are_refused(status: str, words: str) -> None:
    record = {
        "workspace_id": "ws-a",
        "actor_id": KORA.actor_id,
        "actor_kind": "kora",
        "token_id": "t",
        "token_prefix": "wsk_AbCdEfGh",
        "status": status,
    }
    with pytest.raises(RefusalError) as refused:
        principal_from_record(record, "wsk_AbCdEfGh")
    expected = "actor_disabled" if status == "actor_disabled" else "unauthenticated"
    assert refused.value.code == expected and words in refused.value.message
    with pytest.raises(RefusalError):
        principal_from_record(None, "wsk_AbCdEfGh")
    assert principal_from_record({**record, "status": "active"}, "x").workspace_id == "ws-a"


def test_settings_defaults_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KORA_SERVICE_TOKEN", "wsk_from_env")
    settings = GatewaySettings(reader_dsn=READER, gateway_dsn=GATEWAY)
    assert (settings.transport, settings.host, settings.port) == ("stdio", "127.0.0.1", 8765)
    assert settings.governance_ttl_seconds == 1.0
    assert settings.stdio_token == "wsk_from_env"
    assert "wsk_from_env" not in repr(settings)
    given = GatewaySettings(reader_dsn=READER, gateway_dsn=GATEWAY, stdio_token="wsk_given")
    assert given.stdio_token == "wsk_given"
    for bad in (
        {"reader_dsn": "mysql://x/y"},
        {"transport": "sse"},
        {"port": 0},
        {"port": True},
        {"governance_ttl_seconds": -1},
        {"governance_ttl_seconds": 3600},
        {"host": ""},
    ):
        with pytest.raises(ConfigError):
            GatewaySettings(**{"reader_dsn": READER, "gateway_dsn": GATEWAY, **bad})


# ---------------------------------------------------------------------- results, logging


def test_result_format() -> None:
    refused = error("rate_limited", "Slow down.", retry_after_seconds=7, rule_id=None)
    assert refused.is_error
    assert refused.content[0].text == "[rate_limited] Slow down."  # type: ignore[union-attr]
    assert refused.structured_content == {
        "error": {"code": "rate_limited", "message": "Slow down.", "retry_after_seconds": 7}
    }
    assert set(ERROR_CODES) >= set(
        (
            "unauthenticated",
            "workspace_mismatch",
            "capability_denied",
            "kill_switch",
            "rate_limited",
            "too_large",
            "constitution_denied",
            "invalid_argument",
        )
    )
    ok = success({"event_id": KORA.actor_id, "n": 1})
    assert not ok.is_error
    assert json.loads(ok.content[0].text) == ok.structured_content  # type: ignore[union-attr]


def test_decision_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="isokron.gateway.decision")
    secret = "wsk_" + "k" * 40
    log_decision(
        tool="iso_node_create",
        outcome="refused",
        code="constitution_denied",
        actor_id=KORA.actor_id,
        token_prefix=KORA.token_prefix,
        message=f"contained {secret}",
        started=0.0,
    )
    [record] = caplog.records
    tag, _, body = record.getMessage().partition(" ")
    assert tag == "[isokron.gateway.decision]"
    line = json.loads(body)
    assert line["tool"] == "iso_node_create" and line["outcome"] == "refused"
    assert line["code"] == "constitution_denied" and line["token"] == "wsk_AbCdEfGh"
    assert secret not in body and "[REDACTED]" in line["message"]
