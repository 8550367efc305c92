"""What the provider's write hooks write: the scratchpad entries and chain events they plan.

:class:`HookWrites` turns a hook's arguments into the gateway calls (``write_scratchpad``,
``append_event``) with their idempotency keys, hands them to the :class:`ChainWriter` (which
puts each on disk before it returns) and invalidates the cached reads a write changes. Whether a
hook may write at all is the provider's decision (``IsoKronMemoryProvider._may_write``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from isokron.provider import cache as names
from isokron.provider.writes import (
    APPEND_EVENT_TOOL,
    WRITE_SCRATCHPAD_TOOL,
    ChainWriter,
    cap_content,
    idempotency_key,
    kora_actions,
    looks_like_kora_action,
    summarize_for_scratchpad,
)

HANDOFF_EVENT = "kora.handoff.to_claude_pm"
SESSION_ENDED_EVENT = "kora.session.ended"


@dataclass(frozen=True)
class HookWrites:
    """The writes of one workspace's hooks, through ``writer``; ``invalidate`` drops cached
    reads of that workspace."""

    writer: ChainWriter
    workspace_id: str
    invalidate: Callable[[Iterable[str]], None]

    def turn(self, session: str, user_content: str, assistant_content: str) -> None:
        """A turn whose reply names a capability (``cap_…``) becomes a scratchpad entry."""
        if not looks_like_kora_action(assistant_content):
            return
        caps = kora_actions(assistant_content)
        self.scratchpad(
            kind="reasoning_trail",
            summary=summarize_for_scratchpad(assistant_content),
            content=f"user:\n{user_content}\n\nassistant:\n{assistant_content}",
            session_id=session,
            key=idempotency_key("sync_turn", session, user_content, assistant_content),
            what=f"sync_turn scratchpad ({', '.join(caps)})",
        )

    def memory_write(
        self, session: str, action: str, target: str, content: str, old_text: str
    ) -> None:
        """A built-in memory write mirrored as a ``reasoning_trail`` entry."""
        self.scratchpad(
            kind="reasoning_trail",
            summary=summarize_for_scratchpad(f"[memory.{action} → {target}] {content}"),
            content=content or "",
            session_id=session,
            key=idempotency_key("memory_write", session, action, target, content, old_text),
            what=f"memory.{action} → {target}",
        )

    def delegation(self, session: str, task: str, result: str, child_session_id: str) -> None:
        """A hand-off: a shared ``handoff_note`` entry and a handoff chain event."""
        entry = self.scratchpad(
            kind="handoff_note",
            summary=summarize_for_scratchpad(
                f"[delegation → {child_session_id or 'subagent'}] {task}"
            ),
            content=f"task:\n{task}\n\nresult:\n{result}",
            session_id=session,
            key=idempotency_key("delegation", session, child_session_id, task, result),
            what="delegation handoff_note",
            visibility="cross_agent_dereferenceable",
        )
        self.event(
            HANDOFF_EVENT,
            {
                "session_id": session,
                "child_session_id": child_session_id or None,
                "task_summary": summarize_for_scratchpad(task),
                "result_summary": summarize_for_scratchpad(result or ""),
                "scratchpad_entry_id": (entry or {}).get("entry_id"),
            },
            key=idempotency_key("handoff", session, child_session_id, task, result),
        )

    def session_ended(self, session: str, messages: int, turns: int, platform: str) -> None:
        """The ``kora.session.ended`` event."""
        self.event(
            SESSION_ENDED_EVENT,
            {
                "session_id": session,
                "messages": messages,
                "turns": turns,
                "platform": platform or None,
            },
            key=idempotency_key("session_end", session),
        )

    def scratchpad(
        self,
        *,
        kind: str,
        summary: str,
        content: str,
        session_id: str,
        key: str,
        what: str,
        visibility: str = "own_only",
    ) -> dict[str, Any] | None:
        self.invalidate((names.OWN_SCRATCHPAD, names.EVENTS))
        return self.writer.write(
            WRITE_SCRATCHPAD_TOOL,
            {
                "workspace_id": self.workspace_id,
                "kind": kind,
                "summary": summary,
                "content": cap_content(content),
                "visibility_scope": visibility,
                "session_id": session_id or None,
                "idempotency_key": key,
            },
            what=what,
            on_success=lambda _result: self.invalidate((names.OWN_SCRATCHPAD, names.EVENTS)),
        )

    def event(self, event_type: str, payload: dict[str, Any], *, key: str) -> dict[str, Any] | None:
        return self.writer.write(
            APPEND_EVENT_TOOL,
            {
                "workspace_id": self.workspace_id,
                "event_type": event_type,
                "payload": payload,
                "idempotency_key": key,
            },
            what=event_type,
            on_success=lambda _result: self.invalidate((names.EVENTS,)),
        )
