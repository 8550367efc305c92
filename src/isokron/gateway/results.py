"""What a tool call returns to the client: a result, or a tool error with a stable code.

A success is a ``CallToolResult`` whose ``structuredContent`` is the result object and whose
text content is the same object as compact JSON (for clients that read text only).

A refusal or failure is a ``CallToolResult`` with ``isError: true``. Its text content is one
line, ``[<code>] <sentence>``; its ``structuredContent`` is
``{"error": {"code": "<code>", "message": "<sentence>", ...details}}``. Codes are stable:

    unauthenticated, workspace_mismatch, capability_denied, kill_switch, rate_limited,
    too_large, constitution_denied, invalid_argument   the pipeline's refusals
    not_found, conflict                                refusals by the substrate (an unknown
                                                       node, an already decided proposal ...)
    unavailable                                        the database could not be reached
    internal                                           anything else; details are logged

Details are ``retry_after_seconds`` (rate_limited), ``rule_id`` (constitution_denied) and
``denial_event_id`` (the chain event recording the refusal, when one was appended).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp_types import CallToolResult, TextContent
from pydantic_core import to_jsonable_python

from isokron.errors import REFUSAL_CODES

UNAVAILABLE = "unavailable"
INTERNAL = "internal"
#: Codes a client can meet in ``structuredContent.error.code``.
ERROR_CODES = (*REFUSAL_CODES, UNAVAILABLE, INTERNAL)


def success(data: Mapping[str, Any]) -> CallToolResult:
    """A successful result carrying ``data`` (made JSON-safe: UUIDs and datetimes as text)."""
    payload = to_jsonable_python(dict(data))
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=payload)


def error(code: str, message: str, **details: Any) -> CallToolResult:
    """A tool error: ``[code] message`` for people, ``{"error": {...}}`` for programs."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update({k: v for k, v in details.items() if v is not None})
    return CallToolResult(
        content=[TextContent(type="text", text=f"[{code}] {message}")],
        structured_content={"error": to_jsonable_python(body)},
        is_error=True,
    )
