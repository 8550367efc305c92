"""How a gateway tool's arguments are checked against its schema, and kept as given.

The SDK validates a tool call's arguments before the tool runs and reports a failure in its own
words, outside the gateway's pipeline. :class:`ArgumentGuard`, SDK middleware, validates them
first with the tool's own schema, so a call with bad arguments goes through the pipeline too:
it is refused ``invalid_argument`` (with a denial event, after the earlier stages) and its
message names the fields at fault, never the values.

:class:`TextKeepingMetadata` keeps text arguments as text (see its docstring).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from functools import cache
from types import UnionType
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, TextContent
from pydantic import ValidationError

from isokron.gateway import results
from isokron.gateway.decision_log import log_decision
from isokron.governance.arguments import MAX_LISTED_PROBLEMS, describe_validation_error

if TYPE_CHECKING:
    from isokron.gateway.service import Gateway

log = logging.getLogger("isokron.gateway")

#: Unknown argument names that are quoted in a refusal; anything else is only counted.
ARGUMENT_NAME_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class ArgumentGuard:
    """SDK middleware: a gateway tool call's arguments are checked once against its schema,
    here, and the call then runs without the SDK's tool machinery.

    Arguments that fail are refused by the pipeline (``invalid_argument``) rather than by the
    SDK. Arguments that pass go to ``Gateway.call`` exactly as validated here: the SDK would
    validate them a second time and build a ``Context`` for the tool function, whose whole body
    is that same ``Gateway.call`` with its arguments unchanged (a test holds every tool to
    this), for about a seventh of the gateway's CPU per call. The result still goes through the
    tool's ``convert_result``; an unexpected exception becomes the tool error the SDK would
    make of it.
    """

    def __init__(self, gateway: Gateway, tools: list[Tool]) -> None:
        self._gateway = gateway
        self._tools = {tool.name: tool for tool in tools}

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        params = ctx.params
        if ctx.method != "tools/call" or not isinstance(params, Mapping):
            return await call_next(ctx)
        tool = self._tools.get(str(params.get("name")))
        arguments = params.get("arguments") or {}
        if tool is None:
            return unknown_tool(str(params.get("name")), self._tools)
        if not isinstance(arguments, Mapping):
            return await call_next(ctx)
        validated, problem = check_arguments(tool, arguments)
        if validated is None:
            return await self._gateway.call(
                tool.name, ctx.request, arguments, argument_error=problem
            )
        try:
            result = await self._gateway.call(tool.name, ctx.request, validated)
            return tool.fn_metadata.convert_result(result)
        except Exception:  # answered as the SDK answers a tool that raised
            log.exception("[isokron.gateway.unexpected] tool %r raised", tool.name)
            message = f"Error executing tool {tool.name}"
            return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def unknown_tool(name: str, tools: Mapping[str, Tool]) -> CallToolResult:
    """A refusal with a code and ``structuredContent`` for a tool this gateway does not have
    (the SDK's own answer is plain text); the name is quoted only when it looks like one."""
    shown = repr(name) if ARGUMENT_NAME_SHAPE.fullmatch(name) else "the requested tool"
    message = f"This gateway has no tool {shown}; tools/list names its {len(tools)} tools."
    log_decision(
        tool="(unknown)",
        outcome="refused",
        code="invalid_argument",
        message=message,
        started=time.perf_counter(),
    )
    return results.error("invalid_argument", message)


def argument_problem(tool: Tool, arguments: Mapping[str, Any]) -> str | None:
    """Why ``arguments`` do not fit ``tool``'s schema, in words (never quoting a value)."""
    return check_arguments(tool, arguments)[1]


def check_arguments(
    tool: Tool, arguments: Mapping[str, Any]
) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """``arguments`` validated against ``tool``'s schema (the keyword arguments its function
    would get), or why they do not fit it, in words (never quoting a value)."""
    known = set(tool.parameters.get("properties", {}))
    unknown = sorted(str(k) for k in arguments if k not in known)
    if unknown:
        # The refusal is chained and logged: name an unknown argument only when it looks like
        # a name, never arbitrary text (a pasted secret cut short escapes redaction).
        names = [n for n in unknown if ARGUMENT_NAME_SHAPE.fullmatch(n)][:MAX_LISTED_PROBLEMS]
        others = len(unknown) - len(names)
        listed = ", ".join(names + ([f"{others} more that are not names"] if others else []))
        return None, f"unknown argument(s) {listed}; this tool takes {', '.join(sorted(known))}."
    text = text_arguments(tool.fn_metadata.arg_model)
    for name, value in arguments.items():
        # The SDK parses JSON text given for an object or list argument, and quietly keeps
        # the text when the parser gives up on its depth: say so instead.
        if isinstance(value, str) and value[:1] in ("{", "[") and name not in text:
            try:
                json.loads(value)
            except RecursionError:
                return None, f"{name}: the JSON text is nested too deeply to parse."
            except ValueError:
                continue
    try:
        return tool.fn_metadata.validate_arguments(dict(arguments)), None
    except ValidationError as exc:
        return None, describe_validation_error(exc)
    except RecursionError:
        return None, "the arguments are nested too deeply."


class TextKeepingMetadata(FuncMetadata):
    """The SDK's argument handling, except that text stays text.

    The SDK parses JSON text given for any argument not annotated exactly ``str`` (for clients
    that send objects as JSON strings). An optional text argument (``str | None``) whose value
    happens to be JSON, such as a scratchpad entry holding a tool's JSON output, would become an
    object and then be refused as "not a valid string". Arguments that accept text are left as
    given; the others keep the SDK's behaviour.
    """

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        text = text_arguments(self.arg_model)
        parsed = super().pre_parse_json({k: v for k, v in data.items() if k not in text})
        return {k: data[k] if k in text else parsed[k] for k in data}


@cache
def text_arguments(arg_model: type[ArgModelBase]) -> frozenset[str]:
    """Names (and aliases) of the arguments of ``arg_model`` that accept a string."""
    names: set[str] = set()
    for name, field in arg_model.model_fields.items():
        annotation = field.annotation
        if annotation is str or (
            get_origin(annotation) in (Union, UnionType) and str in get_args(annotation)
        ):
            names.update({name, field.alias or name})
    return frozenset(names)
