"""The governance catalogue is the one source: the gateway's tools, the provider's model tools,
the CLI's operator commands, the docs and the database are checked against it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import asyncpg
import click
import typer
from governance_support import snapshot

from isokron.cli.main import app
from isokron.gateway.operations import SPECS
from isokron.gateway.tools import build_tools
from isokron.governance.capabilities import CAPABILITIES
from isokron.governance.operations import (
    DEFAULT_READ_LIMIT,
    MAINTENANCE_CLI,
    MODEL_TOOLS,
    OPERATIONS,
    TOOLS,
)
from isokron.governance.policies import POLICIES, policies_markdown
from isokron.governance.vocabulary import (
    ESCALATION_STATUSES,
    PROPOSAL_STATUSES,
    REFUSAL_CODES,
    SCRATCHPAD_KINDS,
    VISIBILITY_SCOPES,
)
from isokron.provider import tools as provider_tools

DOCS = Path(__file__).resolve().parents[2] / "docs"
CAPABILITY_NAMES = {c.cap_name for c in CAPABILITIES}

SELECT_OP_FUNCTIONS_SQL = """
SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'isokron' AND p.proname LIKE 'op\\_%'
  AND p.pronargs = 4 AND p.prorettype = 'jsonb'::regtype
"""
SELECT_REGISTRY_SQL = "SELECT operation, capability, governance FROM isokron.operation_registry"
SELECT_CHECKS_SQL = """
SELECT conrelid::regclass::text AS tbl, pg_get_constraintdef(oid) AS def
FROM pg_constraint WHERE contype = 'c'
"""
# How the SQL operations read their arguments.
ARGUMENT_READ = re.compile(
    r"(?:arg_(?:text|uuid|object)\(\s*p_args,\s*|p_args\s*(?:->>?|\?)\s*)'([a-z0-9_]+)'"
)


class _NoGateway:
    """build_tools only binds the gateway into the tool bodies; nothing here calls them."""


def test_the_gateway_registers_exactly_the_catalogue_tools() -> None:
    tools = {t.name: t for t in build_tools(_NoGateway())}  # type: ignore[arg-type]
    assert set(tools) == set(TOOLS) == set(SPECS)
    for name, tool in tools.items():
        entry = TOOLS[name]
        assert entry.capability in CAPABILITY_NAMES, name
        assert SPECS[name].capability == entry.capability
        assert SPECS[name].writes == entry.writes
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (not entry.writes), name
        params = set(tool.parameters["properties"])
        assert "workspace_id" in params
        assert ("idempotency_key" in params) is entry.writes, name
        if entry.operation is not None:
            assert entry.operation in OPERATIONS, name


def test_write_tools_prepare_the_operation_the_catalogue_names() -> None:
    samples: dict[str, dict[str, Any]] = {
        "kora__append_event": {"event_type": "kora.note.made"},
        "kora__write_agent_scratchpad": {"kind": "plan", "summary": "s", "content": "c"},
        "kora__propose_convention": {"title": "t", "body": "b"},
        "kora__propose_policy_change": {"policy_key": "policy.kora_disabled", "proposed_value": 1},
        "kora__raise_escalation": {"reason": "r"},
        "iso_node_create": {"node_type": "fact", "title": "t"},
        "iso_node_supersede": {"node_id": "8d6c6a4e-3b8e-4a49-9a69-1f1f0e0e0e0e"},
        "iso_link_create": {
            "from_node_id": "8d6c6a4e-3b8e-4a49-9a69-1f1f0e0e0e0e",
            "to_node_id": "9d6c6a4e-3b8e-4a49-9a69-1f1f0e0e0e0e",
            "link_type": "supports",
        },
        "kora__decide_proposal": {
            "proposal_kind": "convention",
            "proposal_id": "8d6c6a4e-3b8e-4a49-9a69-1f1f0e0e0e0e",
            "decision": "accepted",
        },
        "kora__decide_escalation": {
            "escalation_id": "8d6c6a4e-3b8e-4a49-9a69-1f1f0e0e0e0e",
            "decision": "rejected",
        },
    }
    governance = snapshot()
    assert set(samples) == {n for n, t in TOOLS.items() if t.writes}
    for name, args in samples.items():
        prepared = SPECS[name].prepare(args, governance)
        operation = OPERATIONS[TOOLS[name].operation or ""]
        assert prepared.op == operation.name, name
        # the prepared arguments are exactly the operation's typed shape
        assert operation.arguments.model_validate(prepared.args).sql_args() == prepared.args


def test_the_provider_model_tools_come_from_the_catalogue() -> None:
    schemas = {s["name"]: s for s in provider_tools.TOOL_SCHEMAS}
    assert set(schemas) == set(MODEL_TOOLS)
    for name, tool in MODEL_TOOLS.items():
        assert tool.capability in CAPABILITY_NAMES
        if tool.writes:
            assert tool.gateway_tool in TOOLS and TOOLS[tool.gateway_tool].writes
            assert TOOLS[tool.gateway_tool].capability == tool.capability
        else:
            assert provider_tools.READ_CAPABILITIES[name] == tool.capability
    write = schemas["kora_scratchpad_write"]["parameters"]["properties"]
    assert tuple(write["kind"]["enum"]) == SCRATCHPAD_KINDS
    assert tuple(write["visibility_scope"]["enum"]) == VISIBILITY_SCOPES
    # one default read limit for the gateway and the provider
    assert provider_tools.DEFAULT_LIMIT == DEFAULT_READ_LIMIT
    assert provider_tools.DEFAULT_PULL_CAP == POLICIES["policy.kora_output_size_cap_pull"].default


def _command(path: str) -> Any:
    command: Any = typer.main.get_command(app)
    for word in path.split():
        if not hasattr(command, "get_command"):
            return None
        command = command.get_command(click.Context(command), word)
        if command is None:
            return None
    return command


def test_every_operator_operation_has_its_cli_command() -> None:
    for op in OPERATIONS.values():
        if op.kind in ("governance", "decision"):
            assert op.cli, f"{op.name} has no CLI command"
        for path in op.cli:
            assert _command(path) is not None, f"isokron {path} ({op.name}) is missing"
    assert _command(MAINTENANCE_CLI) is not None


def test_docs_name_every_refusal_code_and_list_every_policy() -> None:
    gateway_md = (DOCS / "gateway.md").read_text(encoding="utf-8")
    for code in REFUSAL_CODES:
        assert f"`{code}`" in gateway_md, code
    policies_md = (DOCS / "policies.md").read_text(encoding="utf-8")
    assert policies_markdown() in policies_md, "regenerate docs/policies.md from the catalogue"


async def test_the_sql_operations_are_the_catalogue_operations(admin_pool: asyncpg.Pool) -> None:
    functions = {r["proname"].removeprefix("op_"): r["prosrc"] for r in
                 await admin_pool.fetch(SELECT_OP_FUNCTIONS_SQL)}  # fmt: skip
    assert set(functions) == set(OPERATIONS)
    for name, source in functions.items():
        read = set(ARGUMENT_READ.findall(source))
        fields = set(OPERATIONS[name].arguments.model_fields)
        assert read == fields, f"isokron.op_{name} reads {sorted(read)}, model has {sorted(fields)}"


async def test_the_operation_registry_agrees_with_the_catalogue(admin_pool: asyncpg.Pool) -> None:
    rows = {r["operation"]: r for r in await admin_pool.fetch(SELECT_REGISTRY_SQL)}
    assert set(rows) == set(OPERATIONS)
    for name, row in rows.items():
        op = OPERATIONS[name]
        assert row["governance"] is op.governance, name
        assert row["capability"] == op.capability, name


async def test_sql_checks_allow_exactly_the_vocabulary(admin_pool: asyncpg.Pool) -> None:
    checks = [(r["tbl"], r["def"]) for r in await admin_pool.fetch(SELECT_CHECKS_SQL)]

    def words(table: str, column: str) -> set[str]:
        for tbl, definition in checks:
            if tbl == table and f"({column} = ANY" in definition.replace("(ARRAY[", "ANY"):
                return set(re.findall(r"'([a-z_]+)'", definition))
            if tbl == table and re.search(rf"\b{column}\b", definition) and "ARRAY[" in definition:
                return set(re.findall(r"'([a-z_]+)'", definition))
        raise AssertionError(f"no CHECK on {table}.{column}")

    assert words("kronicle.agent_scratchpad_entries", "kind") == set(SCRATCHPAD_KINDS)
    assert words("kronicle.agent_scratchpad_entries", "visibility_scope") == set(VISIBILITY_SCOPES)
    assert words("kronicle.escalations", "status") == set(ESCALATION_STATUSES)
    assert words("kronicle.convention_proposals", "status") == set(PROPOSAL_STATUSES)
    assert words("kronicle.policy_change_proposals", "status") == set(PROPOSAL_STATUSES)
