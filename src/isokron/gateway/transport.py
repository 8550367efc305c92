"""The gateway's HTTP transport under faults: what happens before a request reaches MCP.

* :class:`GuardedHttpToolsProtocol` (uvicorn's httptools protocol, the C parser llhttp) closes a
  connection whose request head does not arrive within :data:`HEAD_TIMEOUT_SECONDS` of the
  connection (or of the previous reply): a client trickling header bytes cannot hold a
  connection open (uvicorn's keep-alive timer is reset by every byte, so it does not bound
  that). A request head larger than :data:`MAX_HEAD_BYTES` is answered HTTP 431 and the
  connection closed (llhttp itself sets no limit).
* :class:`RequestGuard` (ASGI) reads every POST body itself, before anything parses it:

  - the body limit is enforced while reading (``Content-Length`` over the limit: HTTP 413 at
    once, nothing read; a chunked body is cut off as soon as it passes the limit);
  - all bodies being held at once share one budget (:data:`BODY_BUDGET_BYTES`): past it a
    request gets HTTP 503 with ``Retry-After``, so memory stays bounded under many large bodies;
  - a body must arrive within :data:`BODY_TIMEOUT_SECONDS` (HTTP 408 otherwise);
  - a client that goes away mid-body costs one INFO line (``[isokron.gateway.client_gone]``);
  - a JSON-RPC request whose id is already in flight in the same MCP session is refused
    (HTTP 409, ``[conflict]``): the SDK routes replies by id, so a second request with a live
    id would get the first one's reply (and the first would wait forever).

Every refusal here is a JSON-RPC error object whose ``data.code`` is the gateway's stable code,
with a sentence a person can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("isokron.gateway.transport")

#: Seconds a connection may take to send a request head (from connect, or the last reply).
HEAD_TIMEOUT_SECONDS = 10.0
#: Seconds a request body may take to arrive, in all.
BODY_TIMEOUT_SECONDS = 30.0
#: Bytes of request bodies held at once by all requests together.
BODY_BUDGET_BYTES = 32 * 1024 * 1024
#: Seconds of idle keep-alive before a connection is closed (uvicorn's setting).
KEEP_ALIVE_SECONDS = 5
#: Bytes a request head (request line and header fields) may take.
MAX_HEAD_BYTES = 32 * 1024
#: Seconds SIGTERM waits for in-flight calls before cancelling them (uvicorn's setting).
GRACEFUL_SHUTDOWN_SECONDS = 10
SESSION_HEADER = b"mcp-session-id"
JSONRPC_INVALID_REQUEST = -32600
JSONRPC_SERVER_ERROR = -32000


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request head and a size limit."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_cycle: Any = None
    _head_bytes = 0
    _head_refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    # The head's size, counted as llhttp hands it over.
    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            # Raised inside a parser callback: llhttp stops and uvicorn answers the parse
            # error with send_400_response, below.
            self._head_refused = True
            raise _HeadTooLarge()

    def send_400_response(self, msg: str) -> None:
        if not self._head_refused:
            super().send_400_response(msg)
            return
        log.info(
            "[isokron.gateway.too_large] request head over %d bytes from %s; connection closed",
            MAX_HEAD_BYTES,
            _peer(self.client),
        )
        body = jsonrpc_error_body(
            "too_large",
            f"The request head is larger than the gateway accepts ({MAX_HEAD_BYTES} bytes).",
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_cycle = self.cycle
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_deadline_passed)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        if self.cycle is not self._head_cycle or self.transport.is_closing():
            return  # a new request head arrived in time
        log.info(
            "[isokron.gateway.slow_client] no complete request head within %.0fs from %s; "
            "connection closed",
            HEAD_TIMEOUT_SECONDS,
            _peer(self.client),
        )
        self.transport.close()


class _HeadTooLarge(Exception):
    """The request head passed :data:`MAX_HEAD_BYTES`."""


class BodyBudget:
    """Bytes of request bodies held at once, shared by all requests (one event loop)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.peak = 0

    def take(self, amount: int) -> bool:
        if self.used + amount > self.total:
            return False
        self.used += amount
        self.peak = max(self.peak, self.used)
        return True

    def give(self, amount: int) -> None:
        self.used = max(0, self.used - amount)


class RequestGuard:
    """ASGI middleware: bounded, timed body reading and one in-flight request per id."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        budget: BodyBudget | None = None,
        body_timeout: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self._app = app
        self._max_body = max_body
        self.budget = budget or BodyBudget(BODY_BUDGET_BYTES)
        self._body_timeout = body_timeout
        self._in_flight: set[tuple[bytes, str]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self._app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self._max_body:
            await self._too_large(send)
            return
        held = 0
        try:
            try:
                body, held = await asyncio.wait_for(
                    self._read_body(receive, declared), self._body_timeout
                )
            except TimeoutError:
                log.info(
                    "[isokron.gateway.slow_client] request body not complete within %.0fs from %s",
                    self._body_timeout,
                    _peer(scope.get("client")),
                )
                await _reply(send, 408, "invalid_argument", "The request body arrived too slowly.")
                return
            except _BodyRefused as refused:
                await _reply(send, refused.status, refused.code, refused.message, refused.headers)
                return
            except _ClientGone:
                log.info(
                    "[isokron.gateway.client_gone] %s went away before its request body was "
                    "complete",
                    _peer(scope.get("client")),
                )
                return
            await self._dispatch(scope, receive, send, body)
        finally:
            self.budget.give(held)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        session = dict(scope.get("headers") or ()).get(SESSION_HEADER)
        ids, method = _request_ids(body)
        scope.setdefault("state", {})["isokron.jsonrpc"] = (method, ids[0] if ids else None)
        keys = [(session, key) for key in ids] if session else []
        busy = [key for key in keys if key in self._in_flight]
        if busy:
            log.warning(
                "[isokron.gateway.duplicate_id] request id %s is already in flight in this "
                "session; refused",
                busy[0][1],
            )
            await _reply(
                send,
                409,
                "conflict",
                f"Request id {busy[0][1]} is already in flight in this session; "
                "use a new id for each request.",
            )
            return
        self._in_flight.update(keys)
        try:
            await self._app(scope, _replay(body, receive), send)
        finally:
            self._in_flight.difference_update(keys)

    async def _read_body(self, receive: Receive, declared: int | None) -> tuple[bytes, int]:
        """The whole body, with its bytes taken from the budget (returned to release)."""
        held = 0
        if declared is not None:
            if not self.budget.take(declared):
                raise _BodyRefused.busy()
            held = declared
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self._max_body:
                    raise _BodyRefused.too_large(self._max_body)
                if size > held:
                    if not self.budget.take(size - held):
                        raise _BodyRefused.busy()
                    held = size
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks), held
        except BaseException:
            self.budget.give(held)
            raise

    async def _too_large(self, send: Send) -> None:
        await _reply(send, 413, "too_large", _too_large_message(self._max_body))


class _ClientGone(Exception):
    """The client disconnected before its body was complete."""


class _BodyRefused(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, list(headers)

    @classmethod
    def too_large(cls, limit: int) -> _BodyRefused:
        return cls(413, "too_large", _too_large_message(limit))

    @classmethod
    def busy(cls) -> _BodyRefused:
        return cls(
            503,
            "unavailable",
            "The gateway is busy reading other large requests; retry in a second.",
            [(b"retry-after", b"1")],
        )


def _too_large_message(limit: int) -> str:
    return f"The request body is larger than the gateway accepts ({limit} bytes)."


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then defers to the real one (so a
    disconnect is still seen)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _request_ids(body: bytes) -> tuple[list[str], str | None]:
    """The ids (as canonical JSON) of the JSON-RPC requests in ``body``, and the first method."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return [], None  # the SDK answers it with a parse error
    messages = data if isinstance(data, list) else [data]
    ids: list[str] = []
    method: str | None = None
    for message in messages:
        if isinstance(message, dict) and "method" in message:
            method = method or str(message.get("method"))
            if message.get("id") is not None:
                ids.append(json.dumps(message["id"]))
    return ids, method


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def jsonrpc_error_body(code: str, message: str, request_id: Any = None) -> bytes:
    """A JSON-RPC error object carrying the gateway's stable ``code`` in ``data.code``."""
    rpc_code = (
        JSONRPC_INVALID_REQUEST if code in ("conflict", "too_large") else JSONRPC_SERVER_ERROR
    )
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {"code": rpc_code, "message": f"[{code}] {message}", "data": {"code": code}},
        },
        ensure_ascii=False,
    ).encode("utf-8")


async def _reply(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = jsonrpc_error_body(code, message)
    await send_json(send, status, body, [(b"connection", b"close"), *headers])


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send one complete JSON response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _peer(client: Any) -> str:
    if isinstance(client, tuple | list) and len(client) == 2:
        return f"{client[0]}:{client[1]}"
    return "a client"
