"""Secrets: secret-shaped strings sent to the gateway never reach the database or a log.

Every string field of every write tool (the call arguments ``workspace_id`` and
``idempotency_key`` included), every object field (as a value and as a key), and an argument
the tool does not take (as its value and as its name) carries a fresh secret of each shape the
default constitution denies: ``wsk_`` service keys, ``sk-`` API keys, ``xoxb-`` Slack tokens,
``AKIA`` AWS key ids, ``ghp_`` GitHub tokens and PEM private keys. Then every text and JSON
column of every table is read back as the superuser, and the gateways' log output is read,
looking for any distinctive piece of any of those secrets: there must be none.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from mcp import Client
from reliability_processes import HttpGatewayProcess, http_session, stdio_session
from reliability_strategies import (
    OPERATOR_TOOLS,
    WRITE_TOOLS,
    Objects,
    Secret,
    embed,
    object_fields,
    plausible_arguments,
    secrets_for_one_probe,
    string_fields,
)
from reliability_support import Figures, Tenant, make_tenant, refusal

from isokron.provider import IsoKronMemoryProvider, IsoKronProviderConfig
from isokron.substrate.dsn import SubstrateDSNs

SECTION = "secrets"
ALL_TABLES_SQL = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname IN ('public', 'kronicle', 'hivex_foundation', 'isokron', 'isokron_api')
ORDER BY 1
"""


def _probes(
    tool: str, schema: dict[str, Any], objects: Objects
) -> list[tuple[str, dict[str, Any], Secret]]:
    """(label, arguments, secret) for every place a secret can be put in a call of ``tool``."""
    probes = []
    for secret in secrets_for_one_probe():
        base = plausible_arguments(tool, schema, objects)
        for name in string_fields(schema):
            probes.append((f"{name}={secret.shape}", {**base, name: embed(secret)}, secret))
        for name in object_fields(schema):
            probes.append(
                (f"{name} value={secret.shape}", {**base, name: {"note": embed(secret)}}, secret)
            )
            probes.append(
                (f"{name} key={secret.shape}", {**base, name: {embed(secret): 1}}, secret)
            )
        probes.append(
            (f"unknown argument value={secret.shape}", {**base, "leak": embed(secret)}, secret)
        )
        probes.append((f"unknown argument name={secret.shape}", {**base, embed(secret): 1}, secret))
    return probes


async def _objects(client: Client) -> Objects:
    """A node, proposals and an escalation the decide/supersede/link probes can name."""
    objects = Objects()
    for n in range(2):
        node = await client.call_tool("iso_node_create", {"node_type": "fact", "title": f"n{n}"})
        objects.add("node", node.structured_content["node_id"])  # type: ignore[index]
    conv = await client.call_tool("kora__propose_convention", {"title": "c", "body": "b"})
    objects.add("proposal", conv.structured_content["proposal_id"])  # type: ignore[index]
    esc = await client.call_tool("kora__raise_escalation", {"reason": "q"})
    objects.add("escalation", esc.structured_content["escalation_id"])  # type: ignore[index]
    return objects


async def _send_all(
    kora: Client,
    operator: Client,
    schemas: dict[str, dict[str, Any]],
    objects: Objects,
    only_one_shape: bool,
) -> tuple[list[Secret], Counter[str], list[str]]:
    sent: list[Secret] = []
    outcomes: Counter[str] = Counter()
    accepted: list[str] = []
    for tool in sorted(WRITE_TOOLS):
        client = operator if tool in OPERATOR_TOOLS else kora
        for i, (label, args, secret) in enumerate(_probes(tool, schemas[tool], objects)):
            if only_one_shape and i % 6:
                continue
            result = await client.call_tool(tool, args)
            error = refusal(result)
            outcomes[error["code"] if error else "accepted"] += 1
            if error is None:
                accepted.append(f"{tool} {label}")
            sent.append(secret)
    return sent, outcomes, accepted


async def _database_hits(admin_pool: asyncpg.Pool, needles: re.Pattern[str]) -> list[str]:
    hits = []
    for (table,) in await admin_pool.fetch(ALL_TABLES_SQL):
        async with admin_pool.acquire() as conn, conn.transaction():
            async for (line,) in conn.cursor(f"SELECT t::text FROM {table} t"):
                for match in needles.finditer(line):
                    hits.append(f"{table}: …{line[max(0, match.start() - 60) : match.end() + 20]}…")
    return hits


def _log_hits(paths: list[Path], needles: re.Pattern[str]) -> list[str]:
    hits = []
    for path in paths:
        text = path.read_text(errors="replace") if path.exists() else ""
        for match in needles.finditer(text):
            hits.append(f"{path.name}: …{text[max(0, match.start() - 80) : match.end() + 20]}…")
    return hits


def _through_the_provider(
    dsns: SubstrateDSNs, gateway: HttpGatewayProcess, tenant: Tenant, home: Path
) -> list[Secret]:
    """Secrets in everything a Hermes host hands the provider that it writes."""
    provider = IsoKronMemoryProvider(
        IsoKronProviderConfig.model_validate(
            {
                "reader_dsn": dsns.reader,
                "mcp_endpoint": gateway.url,
                "workspace_id": tenant.workspace_id,
                "service_token": tenant.kora_token,
            }
        )
    )
    sent = []
    try:
        provider.initialize(
            "secrets-1", platform="cli", agent_context="primary", hermes_home=str(home)
        )
        for secret in secrets_for_one_probe():
            provider.sync_turn(embed(secret), f"done with cap_append_event: {embed(secret)}")
            provider.on_memory_write("add", "memory", embed(secret))
            provider.on_delegation(embed(secret), embed(secret), child_session_id="child")
            provider.handle_tool_call(
                "iso_node_create", {"node_type": "fact", "title": embed(secret)}
            )
            sent += [secret] * 4  # four hook calls carried it
        provider.on_session_end([{"role": "user", "content": "bye"}])
    finally:
        provider.shutdown()
    return sent


@pytest.fixture(scope="module")
async def secret_gateway(
    substrate: SubstrateDSNs, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HttpGatewayProcess]:
    gateway = HttpGatewayProcess(
        substrate, tmp_path_factory.mktemp("secrets") / "gateway-http.log", log_level="DEBUG"
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def test_secret_shaped_strings_reach_neither_the_database_nor_a_log(
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    secret_gateway: HttpGatewayProcess,
    tmp_path: Path,
    figures: Figures,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant: Tenant = await make_tenant(admin_pool, "secrets")
    stdio_log = tmp_path / "gateway-stdio.log"
    sent: list[Secret] = []
    outcomes: Counter[str] = Counter()
    accepted: list[str] = []
    async with (
        http_session(secret_gateway.url, tenant.kora_token) as kora,
        http_session(secret_gateway.url, tenant.operator_token) as operator,
    ):
        schemas = {t.name: dict(t.input_schema) for t in (await kora.list_tools()).tools}
        objects = await _objects(kora)
        s, o, a = await _send_all(kora, operator, schemas, objects, only_one_shape=False)
        sent, outcomes, accepted = sent + s, outcomes + o, accepted + a
    # The same probes over stdio (one secret shape per place, rotating), with their own log.
    async with (
        stdio_session(substrate, tenant.kora_token, stdio_log, log_level="DEBUG") as kora,
        stdio_session(substrate, tenant.operator_token, stdio_log, log_level="DEBUG") as operator,
    ):
        s, o, a = await _send_all(kora, operator, schemas, objects, only_one_shape=True)
        sent, outcomes, accepted = sent + s, outcomes + o, accepted + a

    # And through the Hermes provider: every hook that writes, and a model tool call.
    caplog.set_level(logging.DEBUG)
    provider_secrets = _through_the_provider(substrate, secret_gateway, tenant, tmp_path)
    sent += provider_secrets

    needles = re.compile("|".join(sorted({re.escape(n) for s in sent for n in s.needles})))
    db_hits = await _database_hits(admin_pool, needles)
    log_hits = _log_hits([secret_gateway.log_path, stdio_log], needles)
    # The host process's log: IsoKron's own loggers must stay clean. The official MCP client
    # logs every message it sends at DEBUG ("Sending client message"), secrets included; that
    # is a documented limit (docs/security.md), counted but not IsoKron's to redact.
    host_hits = [r for r in caplog.records if needles.search(r.getMessage())]
    log_hits += [
        f"host log ({r.name}): {r.getMessage()[:200]}"
        for r in host_hits
        if r.name.split(".")[0] == "isokron"
    ]
    sdk_debug = [r for r in host_hits if r.name.startswith("mcp.") and r.levelno <= logging.DEBUG]
    unexplained = [
        r.name for r in host_hits if r.name.split(".")[0] != "isokron" and r not in sdk_debug
    ]

    figures.set(SECTION, "secret probes sent (http, stdio, provider)", len(sent))
    figures.set(SECTION, "secret probes accepted", len(accepted))
    figures.set(SECTION, "outcomes", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    figures.set(SECTION, "secret hits in the database", len(db_hits))
    figures.set(SECTION, "secret hits in IsoKron logs (gateways + provider)", len(log_hits))
    figures.set(SECTION, "MCP SDK client DEBUG lines with a secret (limit)", len(sdk_debug))
    figures.add("fuzz", "gateway fuzz cases run", len(sent))
    figures.add("fuzz", "gateway fuzz failures", len(db_hits) + len(log_hits))
    assert db_hits == [], db_hits[:10]
    assert log_hits == [], log_hits[:10]
    assert unexplained == [], unexplained
    assert accepted == []  # every probe was refused (denied, or malformed for its field)
    assert outcomes["constitution_denied"] > 0
