"""Every policy the provider reads: set it, drive the real provider, observe the effect.

The provider's cache TTL is 0 here, so a policy change applies to the next hook."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from provider_helpers import KoraWorkspace, chain_events, govern

from isokron.provider import IsoKronMemoryProvider
from isokron.provider.prompt_block import (
    SOURCE_OF_TRUTH_LABEL,
    TRIMMED_MARKER,
    estimate_tokens,
)
from isokron.substrate import writes
from isokron.substrate.connection import connect
from isokron.substrate.dsn import SubstrateDSNs

policy_effect = pytest.mark.policy_effect
CEILING = "policy.kora_context_assembler_token_ceiling."
#: A ceiling far below the default block's size (the seeded charter alone is ~700 tokens).
SMALL_CEILING = 150


def _set(admin: str, ws: KoraWorkspace, key: str, value: Any) -> None:
    govern(admin, ws, "set_policies", {"policies": [{"policy_key": key, "policy_value": value}]})


def _agent_writes(admin: str, ws: KoraWorkspace, op: str, args: dict[str, Any], n: int) -> None:
    async def run() -> None:
        conn = await connect(admin)
        try:
            for _ in range(n):
                await writes.write(conn, op, ws.workspace_id, ws.kora_id, args)
        finally:
            await conn.close()

    asyncio.run(run())


def _trimmed(block: str, key: str) -> bool:
    return TRIMMED_MARKER.format(ceiling=SMALL_CEILING, key=key) in block


@pytest.mark.parametrize(
    ("model", "family"),
    [
        pytest.param(
            "claude-opus-4-1",
            "opus",
            marks=policy_effect("policy.kora_context_assembler_token_ceiling.opus"),
        ),
        pytest.param(
            "anthropic/claude-sonnet-4.5",
            "sonnet",
            marks=policy_effect("policy.kora_context_assembler_token_ceiling.sonnet"),
        ),
        pytest.param(
            "claude-haiku-4-5",
            "haiku",
            marks=policy_effect("policy.kora_context_assembler_token_ceiling.haiku"),
        ),
        pytest.param(
            "gpt-4o",
            "default",
            marks=policy_effect("policy.kora_context_assembler_token_ceiling.default"),
        ),
    ],
)
def test_the_model_familys_ceiling_trims_the_prompt_block(
    substrate: SubstrateDSNs, kora_workspace, make_provider, model: str, family: str
) -> None:
    ws = kora_workspace()
    provider = make_provider(ws, cache_ttl_seconds=0, wait=False)
    provider.on_turn_start(1, "hi", model=model)  # Hermes reports the model it runs
    whole = provider.system_prompt_block()
    assert "trimmed here" not in whole and estimate_tokens(whole) > SMALL_CEILING
    # another family's ceiling does not apply to this model
    other = "sonnet" if family != "sonnet" else "haiku"
    _set(substrate.admin, ws, CEILING + other, SMALL_CEILING)
    assert "trimmed here" not in provider.system_prompt_block()
    _set(substrate.admin, ws, CEILING + family, SMALL_CEILING)
    block = provider.system_prompt_block()
    assert _trimmed(block, CEILING + family)
    assert block.endswith(SOURCE_OF_TRUTH_LABEL)
    assert block.startswith("§1 Identity")
    assert estimate_tokens(block) <= SMALL_CEILING


def test_the_model_named_in_the_hermes_config_sets_the_family(
    substrate: SubstrateDSNs, kora_workspace, tmp_path: Path
) -> None:
    ws = kora_workspace()
    _set(substrate.admin, ws, CEILING + "haiku", SMALL_CEILING)
    (tmp_path / "config.yaml").write_text("model:\n  default: claude-3-5-haiku-latest\n")
    from provider_helpers import provider_config

    provider = IsoKronMemoryProvider(provider_config(substrate, ws, cache_ttl_seconds=0))
    try:
        provider.initialize("s", platform="cli", agent_context="primary", hermes_home=str(tmp_path))
        assert provider.model == "claude-3-5-haiku-latest"
        assert _trimmed(provider.system_prompt_block(), CEILING + "haiku")
    finally:
        provider.shutdown()


@policy_effect("policy.kora_scratchpad_read_limit")
def test_scratchpad_read_limit(substrate: SubstrateDSNs, kora_workspace, make_provider) -> None:
    ws = kora_workspace()
    entry = writes.scratchpad_args(kind="plan", summary="s", content="c")
    _agent_writes(substrate.admin, ws, "write_scratchpad_entry", entry, 4)
    provider = make_provider(ws, cache_ttl_seconds=0, wait=False)
    context = provider.session_context()
    assert context is not None and len(context.own_scratchpad) == 4
    _set(substrate.admin, ws, "policy.kora_scratchpad_read_limit", 2)
    context = provider.session_context()
    assert context is not None and len(context.own_scratchpad) == 2


@policy_effect("policy.kora_recent_event_read_limit")
@policy_effect("policy.kora_prompt_recent_activity_count")
def test_recent_event_limits(substrate: SubstrateDSNs, kora_workspace, make_provider) -> None:
    ws = kora_workspace()
    _agent_writes(substrate.admin, ws, "append_event", {"event_type": "kora.note.made"}, 6)
    provider = make_provider(ws, cache_ttl_seconds=0, wait=False)
    context = provider.session_context()
    assert context is not None and len(context.recent_chain_events) == 6
    assert "§6 Recent kora.* activity (last 5):" in provider.system_prompt_block()
    assert provider.system_prompt_block().count("kora.note.made") == 5
    _set(substrate.admin, ws, "policy.kora_prompt_recent_activity_count", 2)
    assert provider.system_prompt_block().count("kora.note.made") == 2
    _set(substrate.admin, ws, "policy.kora_recent_event_read_limit", 1)
    context = provider.session_context()
    assert context is not None and len(context.recent_chain_events) == 1
    assert provider.system_prompt_block().count("kora.note.made") == 1


@policy_effect("policy.kora_subagent_writes_enabled")
def test_subagent_writes(substrate: SubstrateDSNs, kora_workspace, make_provider) -> None:
    ws = kora_workspace()
    provider = make_provider(ws, agent_context="subagent", cache_ttl_seconds=0, wait=False)
    assert not provider.writes_enabled
    provider.on_session_end([])
    assert not [e for e in chain_events(substrate.admin, ws.workspace_id)
                if e["event_type"] == "kora.session.ended"]  # fmt: skip
    _set(substrate.admin, ws, "policy.kora_subagent_writes_enabled", True)
    assert provider.writes_enabled
    assert provider.wait_ready(60)
    provider.on_session_end([])
    ended = [e for e in chain_events(substrate.admin, ws.workspace_id)
             if e["event_type"] == "kora.session.ended"]  # fmt: skip
    assert len(ended) == 1
