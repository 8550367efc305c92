"""One structured log line per gateway decision.

Every call the gateway decides is logged once, at INFO (ERROR when the call failed for a
reason that is not a refusal), on the logger ``isokron.gateway.decision``::

    [isokron.gateway.decision] {"tool":"iso_node_create","outcome":"allowed","code":null,
     "actor_id":"…","actor_kind":"kora","workspace_id":"ws-a","token":"wsk_AbCdEfGh",
     "event_id":"…","rule_id":null,"ms":1.84}

``outcome`` is ``allowed``, ``replayed`` (an idempotent retry), ``escalated``, ``refused`` or
``error``; ``code`` is the refusal or error code. ``token`` is a token's public prefix and
nothing more: the secret part of a token is never logged, and a malformed token (which may be
some other secret pasted by mistake) is not logged at all. Messages go through
``redact_secrets`` before they are logged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from isokron.errors import RefusalError
from isokron.governance.redaction import redact_secrets

log = logging.getLogger("isokron.gateway.decision")

TAG = "[isokron.gateway.decision]"


def log_decision(
    *,
    tool: str,
    outcome: str,
    started: float,
    code: str | None = None,
    actor_id: str | None = None,
    actor_kind: str | None = None,
    workspace_id: str | None = None,
    token_prefix: str | None = None,
    event_id: str | None = None,
    rule_id: str | None = None,
    message: str | None = None,
) -> None:
    """Log one decision; ``started`` is the ``time.perf_counter()`` the call began at."""
    level = logging.ERROR if outcome == "error" else logging.INFO
    if not log.isEnabledFor(level):
        return
    line: dict[str, Any] = {
        "tool": tool,
        "outcome": outcome,
        "code": code,
        "actor_id": actor_id,
        "actor_kind": actor_kind,
        "workspace_id": workspace_id,
        "token": token_prefix,
        "event_id": event_id,
        "rule_id": rule_id,
        "ms": round((time.perf_counter() - started) * 1000, 3),
    }
    if message is not None:
        line["message"] = redact_secrets(message)
    log.log(level, "%s %s", TAG, json.dumps(line, separators=(",", ":"), ensure_ascii=False))


def log_refused_token(refusal: RefusalError, *, token_prefix: str | None, started: float) -> None:
    """Log an HTTP request refused before any tool was named (bad or missing bearer token)."""
    log_decision(
        tool="(http)",
        outcome="refused",
        code=refusal.code,
        token_prefix=token_prefix,
        message=refusal.message,
        started=started,
    )
