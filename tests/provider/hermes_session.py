"""A Hermes Agent session driven line by line from stdin (run as a child process by the tests).

``python hermes_session.py <chat_base_url> <session_id>`` with ``HERMES_HOME`` and the IsoKron
settings in the environment. It builds Hermes's real ``AIAgent`` (``memory.provider: isokron``)
and reads commands from stdin:

* ``turn <n>`` — one conversation turn: the scripted model calls ``iso_node_create`` (title
  ``t<n>``), then answers naming ``cap_iso_node_create`` (so ``sync_turn`` writes too); prints
  ``TURN {json}`` with the wall time and the time spent inside IsoKron's hooks this turn;
* ``exit`` — ends the session the way the Hermes CLI does (``shutdown_memory_provider``),
  prints ``EXITED {json}`` and exits 0;
* ``crash`` — exits at once without any shutdown (``os._exit``), like a killed host.

Time inside the provider is measured by wrapping its hook methods before Hermes creates it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from typing import Any

from isokron.provider.provider import IsoKronMemoryProvider

HOOKS = (
    "initialize",
    "system_prompt_block",
    "on_turn_start",
    "prefetch",
    "sync_turn",
    "handle_tool_call",
    "on_session_end",
    "shutdown",
)
_spent: dict[str, float] = {}
_lock = threading.Lock()


def _timed(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                _spent[name] = _spent.get(name, 0.0) + time.perf_counter() - started

    return wrapper


for _hook in HOOKS:
    setattr(IsoKronMemoryProvider, _hook, _timed(_hook, getattr(IsoKronMemoryProvider, _hook)))


def _take() -> dict[str, float]:
    with _lock:
        spent = dict(_spent)
        _spent.clear()
    return spent


def main() -> int:
    from run_agent import AIAgent

    base_url, session_id = sys.argv[1], sys.argv[2]
    agent = AIAgent(
        base_url=base_url,
        api_key="not-a-real-key",
        model="fake-model",
        quiet_mode=True,
        skip_context_files=True,
        session_id=session_id,
        max_iterations=4,
        enabled_toolsets=["memory"],
    )
    history: list[dict[str, Any]] | None = None
    _take()
    print("READY", flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command:
            continue
        if command[0] == "turn":
            started = time.perf_counter()
            result = agent.run_conversation(
                f"Turn {command[1]}: please record it.", conversation_history=history
            )
            history = result.get("messages")
            manager = getattr(agent, "_memory_manager", None)
            if manager is not None:
                manager.flush_pending(timeout=60)  # the turn's sync_turn (FIFO worker) too
            wall = time.perf_counter() - started
            spent = _take()
            report = {
                "turn": int(command[1]),
                "wall": round(wall, 3),
                "provider": round(sum(spent.values()), 3),
                "hooks": {k: round(v, 3) for k, v in spent.items()},
                "final": result.get("final_response"),
            }
            print("TURN " + json.dumps(report), flush=True)
        elif command[0] == "exit":
            started = time.perf_counter()
            agent.shutdown_memory_provider(history)
            spent = _take()
            report = {"wall": round(time.perf_counter() - started, 3), "hooks": spent}
            print("EXITED " + json.dumps(report), flush=True)
            return 0
        elif command[0] == "crash":
            os._exit(3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
