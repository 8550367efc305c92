"""End to end: Hermes Agent's ``AIAgent`` (run_agent.py) with ``memory.provider: isokron``,
talking to a scripted OpenAI-compatible server on 127.0.0.1 (no LLM, no key).

The scripted model calls an IsoKron tool, then answers. The agent runs in a child process with
its own ``HERMES_HOME`` (the plugin folder written by ``install_hermes_plugin``, a config.yaml
selecting it, the settings in the environment), exactly as an operator would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fake_chat_server import ChatScript, serve_chat, tool_call
from provider_helpers import assert_chain_verifies, chain_events, payload, scratchpad_rows

from isokron.provider import install_hermes_plugin
from isokron.provider.prompt_block import SOURCE_OF_TRUTH_LABEL
from isokron.substrate.dsn import SubstrateDSNs

AGENT_SCRIPT = """
import json, sys
from run_agent import AIAgent

agent = AIAgent(
    base_url=sys.argv[1], api_key="not-a-real-key", model="fake-model", quiet_mode=True,
    skip_context_files=True, session_id=sys.argv[2], max_iterations=4,
    enabled_toolsets=["memory"],
)
result = agent.run_conversation("Please record that we chose row-level security.")
agent.shutdown_memory_provider(result.get("messages"))
print("RESULT " + json.dumps({"final": result.get("final_response")}))
"""
SESSION_ID = "agent-e2e-session"


def test_ai_agent_runs_a_turn_with_the_isokron_provider(
    substrate: SubstrateDSNs, kora_workspace, tmp_path: Path
) -> None:
    ws = kora_workspace("agent")
    home = tmp_path / "hermes_home"
    home.mkdir()
    install_hermes_plugin(home)
    (home / "config.yaml").write_text("memory:\n  provider: isokron\n")
    script = ChatScript(
        replies=[
            {
                "content": None,
                "tool_calls": [
                    tool_call(
                        "call_1",
                        "iso_node_create",
                        {
                            "node_type": "decision",
                            "title": "Tenant isolation by RLS",
                            "content": "Row-level security, enabled and forced.",
                        },
                    )
                ],
            },
            {"content": "Recorded the decision (cap_iso_node_create)."},
        ]
    )
    env = dict(
        os.environ,
        HERMES_HOME=str(home),
        ISOKRON_READER_DSN=substrate.reader,
        ISOKRON_GATEWAY_DSN=substrate.gateway,
        ISOKRON_WORKSPACE_ID=ws.workspace_id,
        KORA_SERVICE_TOKEN=ws.token,
        ISOKRON_MCP_ENDPOINT="stdio",
    )
    with serve_chat(script) as base_url:
        done = subprocess.run(
            [sys.executable, "-c", AGENT_SCRIPT, base_url, SESSION_ID],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert (
        json.loads(line[len("RESULT ") :])["final"]
        == "Recorded the decision (cap_iso_node_create)."
    )

    # What the model was sent: the §1–§6 block in the system prompt, and IsoKron's tools.
    assert len(script.requests) == 2
    first = script.requests[0]
    system = first["messages"][0]
    assert system["role"] == "system"
    for heading in (
        "§1 Identity (Kora Role Charter v1)",
        "§2 You CAN:",
        "§3 You CANNOT:",
        "§4 Active policy values",
        "§5 Granted capabilities (22 of 49):",
        "§6 Recent kora.* activity",
    ):
        assert heading in system["content"], heading
    assert SOURCE_OF_TRUTH_LABEL in system["content"]
    tools = {t["function"]["name"] for t in first["tools"]}
    assert {"iso_node_create", "kora_scratchpad_read", "kora_escalation_queue_read"} <= tools
    tool_messages = [m for m in script.requests[1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1 and '"node_id"' in tool_messages[0]["content"]

    # What the chain holds afterwards: the tool's write, the turn, and the session end, each
    # exactly once. The tool's write comes first (the model's tool call is answered before the
    # turn ends); Hermes runs sync_turn on its sync worker and calls on_session_end at shutdown
    # without draining that worker, so the turn's entry and the session end may land in
    # either order.
    events = [
        e for e in chain_events(substrate.admin, ws.workspace_id) if e["actor_kind"] == "kora"
    ]
    types = [e["event_type"] for e in events]
    assert types[0] == "kora.node.created"
    assert sorted(types[1:]) == ["kora.scratchpad.written", "kora.session.ended"]
    node_id = json.loads(tool_messages[0]["content"])["node_id"]
    assert payload(events[0])["node_id"] == node_id
    [ended] = [e for e in events if e["event_type"] == "kora.session.ended"]
    assert payload(ended)["session_id"] == SESSION_ID
    [entry] = scratchpad_rows(substrate.admin, ws.workspace_id)
    assert entry["session_id"] == SESSION_ID and "cap_iso_node_create" in entry["summary"]
    assert_chain_verifies(substrate.admin, ws.workspace_id)
