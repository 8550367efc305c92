"""The host base class: Hermes Agent's ``MemoryProvider`` when hermes-agent is installed.

Without hermes-agent (e.g. ``isokron demo`` or ``isokron context`` on a machine that only runs
the substrate), the provider subclasses :class:`StandaloneMemoryProvider` instead: the same
hook names and defaults as Hermes 0.19.0's ABC, so the provider behaves identically when a
program (the demo) drives the hooks itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class StandaloneMemoryProvider(ABC):
    """Hermes 0.19.0's ``MemoryProvider`` interface, for use without hermes-agent installed."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Short identifier of the provider."""

    @abstractmethod
    def is_available(self) -> bool:
        """True if configured and ready (no network calls)."""

    @abstractmethod
    def initialize(self, session_id: str, **kwargs: Any) -> None:
        """Start a session."""

    @abstractmethod
    def get_tool_schemas(self) -> list[dict[str, Any]]:
        """The tools the provider gives the model."""

    def system_prompt_block(self) -> str:
        return ""

    def prefetch(self, query: str, *, session_id: str = "") -> str:
        return ""

    def queue_prefetch(self, query: str, *, session_id: str = "") -> None:
        return None

    def sync_turn(
        self,
        user_content: str,
        assistant_content: str,
        *,
        session_id: str = "",
        messages: list[dict[str, Any]] | None = None,
    ) -> None:
        return None

    def handle_tool_call(self, tool_name: str, args: dict[str, Any], **kwargs: Any) -> str:
        raise NotImplementedError(f"Provider {self.name} does not handle tool {tool_name}")

    def shutdown(self) -> None:
        return None

    def on_turn_start(self, turn_number: int, message: str, **kwargs: Any) -> None:
        return None

    def on_session_end(self, messages: list[dict[str, Any]]) -> None:
        return None

    def on_session_switch(
        self,
        new_session_id: str,
        *,
        parent_session_id: str = "",
        reset: bool = False,
        rewound: bool = False,
        **kwargs: Any,
    ) -> None:
        return None

    def on_pre_compress(self, messages: list[dict[str, Any]]) -> str:
        return ""

    def on_delegation(
        self, task: str, result: str, *, child_session_id: str = "", **kwargs: Any
    ) -> None:
        return None

    def get_config_schema(self) -> list[dict[str, Any]]:
        return []

    def save_config(self, values: dict[str, Any], hermes_home: str) -> None:
        return None

    def on_memory_write(
        self, action: str, target: str, content: str, metadata: dict[str, Any] | None = None
    ) -> None:
        return None

    def backup_paths(self) -> list[str]:
        return []


try:
    from agent.memory_provider import MemoryProvider as HostMemoryProvider

    HERMES_INSTALLED = True
except ImportError:  # hermes-agent is an optional extra
    HostMemoryProvider = StandaloneMemoryProvider  # type: ignore[assignment,misc]
    HERMES_INSTALLED = False


def hermes_home_default() -> str | None:
    """Hermes's active ``HERMES_HOME`` (None without hermes-agent)."""
    if not HERMES_INSTALLED:
        return None
    from hermes_constants import get_hermes_home

    return str(get_hermes_home())


__all__ = [
    "HERMES_INSTALLED",
    "HostMemoryProvider",
    "StandaloneMemoryProvider",
    "hermes_home_default",
]
