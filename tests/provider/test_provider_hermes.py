"""Hermes Agent 0.19.0 integration, through the real hermes-agent package: plugin folder
discovery, the entry point, ``hermes memory setup``'s schema, tool names, and a whole session
lifecycle driven by Hermes's own ``MemoryManager``."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
from provider_helpers import KoraWorkspace, assert_chain_verifies, chain_events, payload

from isokron.errors import ConfigError
from isokron.provider import IsoKronMemoryProvider, install_hermes_plugin
from isokron.provider.install import GENERATED_MARKER, plugin_dir
from isokron.provider.plugin import ENTRY_POINT_GROUP, register
from isokron.provider.tools import TOOL_NAMES
from isokron.substrate.dsn import SubstrateDSNs


@pytest.fixture
def hermes_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hermes_home"
    home.mkdir()
    monkeypatch.setenv("HERMES_HOME", str(home))
    return home


def set_env(monkeypatch: pytest.MonkeyPatch, dsns: SubstrateDSNs, ws: KoraWorkspace) -> None:
    monkeypatch.setenv("ISOKRON_READER_DSN", dsns.reader)
    monkeypatch.setenv("ISOKRON_GATEWAY_DSN", dsns.gateway)
    monkeypatch.setenv("ISOKRON_WORKSPACE_ID", ws.workspace_id)
    monkeypatch.setenv("KORA_SERVICE_TOKEN", ws.token)
    monkeypatch.delenv("ISOKRON_MCP_ENDPOINT", raising=False)


def test_install_writes_the_folder_hermes_scans(hermes_home: Path) -> None:
    target = install_hermes_plugin(hermes_home)
    assert target == hermes_home / "plugins" / "isokron"
    init = (target / "__init__.py").read_text()
    assert "MemoryProvider" in init[:8192] and "def register(ctx)" in init
    assert install_hermes_plugin(hermes_home) == target  # re-running upgrades in place
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--force"):
        install_hermes_plugin(hermes_home)
    install_hermes_plugin(hermes_home, force=True)
    other = plugin_dir(hermes_home.parent / "other")
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("# someone else's plugin")
    with pytest.raises(ConfigError, match="not written by"):
        install_hermes_plugin(hermes_home.parent / "other")
    assert GENERATED_MARKER in init

    from hermes_cli.plugins import PluginManager

    manifests = PluginManager()._scan_directory(hermes_home / "plugins", "user")
    [manifest] = [m for m in manifests if m.name == "isokron"]
    assert manifest.kind == "exclusive"  # the general plugin loader leaves it alone


def test_hermes_discovers_loads_and_sets_up_the_provider(
    substrate: SubstrateDSNs, kora_workspace, hermes_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hermes_cli.memory_setup import _get_available_providers
    from plugins.memory import discover_memory_providers, find_provider_dir, load_memory_provider

    install_hermes_plugin(hermes_home)
    assert find_provider_dir("isokron") == hermes_home / "plugins" / "isokron"
    found = {name: (desc, available) for name, desc, available in discover_memory_providers()}
    assert found["isokron"][0].startswith("IsoKron")
    assert found["isokron"][1] is False  # not configured yet: no DSN, no workspace

    set_env(monkeypatch, substrate, kora_workspace())
    found = {name: available for name, _, available in discover_memory_providers()}
    assert found["isokron"] is True
    provider = load_memory_provider("isokron")
    assert isinstance(provider, IsoKronMemoryProvider) and provider.name == "isokron"

    setup = {name: (hint, p) for name, hint, p in _get_available_providers()}
    hint, wizard_provider = setup["isokron"]
    assert hint == "API key / local"  # a secret (the token) and local settings
    keys = [f["key"] for f in wizard_provider.get_config_schema()]
    assert keys[:2] == ["reader_dsn", "workspace_id"] and "service_token" in keys
    wizard_provider.save_config({"cache_ttl_seconds": "30"}, str(hermes_home))
    assert json.loads((hermes_home / "isokron.json").read_text()) == {"cache_ttl_seconds": "30"}


def test_entry_point_and_register() -> None:
    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    [ep] = [e for e in entry_points if e.name == "isokron"]
    assert ep.load() is register

    from plugins.memory import _ProviderCollector

    collector = _ProviderCollector()
    register(collector)
    assert isinstance(collector.provider, IsoKronMemoryProvider)
    register(object())  # a context that cannot take memory providers: logged, not raised


def test_tool_names_do_not_collide_with_hermes_tools() -> None:
    import model_tools
    from toolsets import _HERMES_CORE_TOOLS

    assert not TOOL_NAMES & set(_HERMES_CORE_TOOLS)
    assert not TOOL_NAMES & set(model_tools.get_all_tool_names())


def test_whole_lifecycle_through_hermes_memory_manager(
    substrate: SubstrateDSNs, kora_workspace, hermes_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.memory_manager import MemoryManager
    from plugins.memory import load_memory_provider

    ws = kora_workspace("mm")
    set_env(monkeypatch, substrate, ws)
    install_hermes_plugin(hermes_home)
    provider = load_memory_provider("isokron")
    assert provider is not None and provider.is_available()

    manager = MemoryManager()
    manager.add_provider(provider)
    try:
        manager.initialize_all(session_id="mm-1", platform="cli", agent_context="primary")
        assert manager.has_tool("iso_node_create")
        assert {s["name"] for s in manager.get_all_tool_schemas()} == TOOL_NAMES

        prompt = manager.build_system_prompt()
        assert (
            "§1 Identity (Kora Role Charter v1)" in prompt and "§6 Recent kora.* activity" in prompt
        )
        manager.on_turn_start(1, "Remember our tenant isolation decision")
        created = json.loads(
            manager.handle_tool_call(
                "iso_node_create",
                {
                    "node_type": "decision",
                    "title": "Tenant isolation by RLS",
                    "content": "forced RLS",
                },
            )
        )
        assert "node_id" in created
        recall = manager.prefetch_all("what was the tenant isolation decision?")
        assert "Tenant isolation by RLS" in recall

        manager.sync_all("record it", "Recorded with cap_iso_node_create.", session_id="mm-1")
        manager.notify_memory_tool_write(
            json.dumps({"success": True}),
            {"action": "add", "target": "user", "content": "Prefers short answers."},
            build_metadata=lambda: {"session_id": "mm-1", "write_origin": "tool"},
        )
        manager.on_delegation("Draft the rollout plan", "Drafted.", child_session_id="mm-1-sub")
        manager.commit_session_boundary_async(
            [{"role": "user", "content": "x"}], new_session_id="mm-2"
        )
        assert manager.flush_pending(timeout=60)
        assert provider.session_id == "mm-2"
        manager.sync_all("next", "Used cap_append_event.", session_id="mm-2")
        assert manager.flush_pending(timeout=60)
        manager.on_session_end([])
    finally:
        manager.shutdown_all()

    events = [
        e for e in chain_events(substrate.admin, ws.workspace_id) if e["actor_kind"] == "kora"
    ]
    assert [e["event_type"] for e in events] == [
        "kora.node.created",
        "kora.scratchpad.written",  # sync_all (turn of mm-1)
        "kora.scratchpad.written",  # the built-in memory write, mirrored
        "kora.scratchpad.written",  # the delegation's hand-off note
        "kora.handoff.to_claude_pm",
        "kora.session.ended",  # mm-1, from the session boundary
        "kora.scratchpad.written",  # sync_all (turn of mm-2)
        "kora.session.ended",  # mm-2
    ]
    assert [
        payload(e)["session_id"] for e in events if e["event_type"] == "kora.session.ended"
    ] == ["mm-1", "mm-2"]
    # Hermes runs sync_all on its background worker and the memory-write mirror inline, so the
    # two scratchpad writes of mm-1 may land in either order; each lands exactly once.
    first_turn = sorted(payload(e)["summary"] for e in events[1:3])
    assert first_turn[0].startswith("Recorded with cap_iso_node_create.")
    assert first_turn[1].startswith("[memory.add → user] Prefers short answers.")
    assert_chain_verifies(substrate.admin, ws.workspace_id)
