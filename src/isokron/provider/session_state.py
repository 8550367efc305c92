"""Who the provider is serving: the Hermes session, agent context, platform, model and turn.

:class:`SessionState` is what ``initialize``, ``on_turn_start`` and ``on_session_switch`` tell the
provider about the session, and what the write hooks stamp on their entries. Only the
``primary`` agent context writes (unless the workspace's policy lets sub-agents write).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from isokron.provider.host import hermes_home_default

PRIMARY = "primary"


@dataclass
class SessionState:
    """The session the hooks belong to, as Hermes last described it."""

    session_id: str = ""
    agent_context: str = PRIMARY
    platform: str = ""
    hermes_home: str | None = None
    model: str | None = None
    turn: int = 0
    #: Sessions whose ``kora.session.ended`` event was written (once per session).
    ended: set[str] = field(default_factory=set)

    @property
    def primary(self) -> bool:
        return self.agent_context == PRIMARY

    def begin(self, session_id: str, kwargs: dict[str, Any]) -> None:
        """What ``initialize`` says: the Hermes home, session, context, platform and model (the
        one Hermes names, else the one ``$HERMES_HOME/config.yaml`` names)."""
        self.hermes_home = kwargs.get("hermes_home") or hermes_home_default()
        self.session_id = session_id or ""
        self.agent_context = str(kwargs.get("agent_context") or PRIMARY)
        self.platform = str(kwargs.get("platform") or "")
        self.model = _model_name(kwargs.get("model")) or hermes_model(self.hermes_home)

    def start_turn(self, turn_number: int, model: Any) -> None:
        """Follow the turn number and the model Hermes reports (``model=``), if it does."""
        self.turn = int(turn_number or 0)
        self.model = _model_name(model) or self.model

    def switch(self, new_session_id: str, *, reset: bool) -> None:
        """Follow ``on_session_switch``: the new id (if any); a reset starts the turns over."""
        if new_session_id:
            self.session_id = new_session_id
        if reset:
            self.turn = 0

    def no_write_reason(self) -> str:
        """Why this session's hooks do not write although a writer is open."""
        return f"agent context {self.agent_context!r}" if not self.primary else "no service token"


def _model_name(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def hermes_model(hermes_home: str | None) -> str | None:
    """The model ``$HERMES_HOME/config.yaml`` names (``model: name`` or ``model: {default:}``)."""
    if not hermes_home:
        return None
    path = Path(hermes_home) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict):
        model = model.get("default") or model.get("model")
    return _model_name(model)
