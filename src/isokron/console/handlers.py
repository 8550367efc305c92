"""The console's API handlers: each takes the process state, the request and its live session.

Reads return JSON-ready data; writes go through :class:`isokron.console.actions.OperatorActions`
(the shared write operations, as the signed-in operator). Sessions, CSRF and errors are handled
by the wrappers in :mod:`isokron.console.app`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from isokron.console import diagnostics, panels, queries
from isokron.console.sessions import Session
from isokron.console.state import ConsoleState
from isokron.errors import ConfigError, NotFoundError
from isokron.governance.rules import Constitution

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body; ConfigError for anything else."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise ConfigError("send the request body as application/json")
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("the request body must be a JSON object")
    return data


# ---------------------------------------------------------------- reads
async def panel(state: ConsoleState, request: Request, session: Session) -> Any:
    name = request.path_params["name"]
    if name not in panels.PANELS:
        raise NotFoundError(f"no panel {name!r}; panels: {', '.join(panels.PANELS)}")
    ctx = await state.panel_context(session)
    data = await panels.PANELS[name][1](ctx)
    if name == "verification":
        data["jobs"] = [j.to_dict() for j in session.verify_jobs.values()]
    return data


async def chain(state: ConsoleState, request: Request, session: Session) -> Any:
    q = request.query_params
    ctx = await state.panel_context(session)
    return {
        "events": await queries.chain_page(
            ctx.reader_pool,
            ctx.workspace_id,
            event_type=q.get("type") or None,
            actor_kind=q.get("actor_kind") or None,
            since=_time(q.get("since")),
            until=_time(q.get("until")),
            after_seq=int(q["after_seq"]) if q.get("after_seq") else None,
            limit=int(q.get("limit") or 100),
        )
    }


async def chain_event(state: ConsoleState, request: Request, session: Session) -> Any:
    ctx = await state.panel_context(session)
    event = await queries.chain_event(ctx.reader_pool, ctx.workspace_id, request.path_params["seq"])
    if event is None:
        raise NotFoundError(f"no event with seq {request.path_params['seq']}")
    return event


async def verify_start(state: ConsoleState, request: Request, session: Session) -> Any:
    return state.start_verify(session).to_dict()


async def verify_poll(state: ConsoleState, request: Request, session: Session) -> Any:
    job = session.verify_jobs.get(request.path_params["job_id"])
    if job is None:
        raise NotFoundError("no such verification run in this session")
    return job.to_dict()


async def checkpoint(state: ConsoleState, request: Request, session: Session) -> Any:
    return await asyncio.to_thread(state.take_checkpoint, session.principal.workspace_id)


async def dry_run(state: ConsoleState, request: Request, session: Session) -> Any:
    body = await read_body(request)
    ctx = await state.panel_context(session)
    revisions = await queries.constitution_history(ctx.reader_pool, ctx.workspace_id)
    if not revisions:
        raise NotFoundError("this workspace has no constitution revision yet")
    wanted = body.get("revision_number")
    rev = next((r for r in revisions if r["revision_number"] == wanted), revisions[0])
    constitution = Constitution.from_rules(rev["rules"])
    text = str(body.get("text") or "")
    decision = constitution.evaluate(
        tool=str(body.get("tool") or "kora__write_agent_scratchpad"),
        event_type=body.get("event_type") or None,
        arguments={"content": text},
    )
    return {
        "revision_number": rev["revision_number"],
        "effect": decision.effect,
        "rule_id": decision.rule_id,
        "reason": decision.reason,
    }


async def bundle(state: ConsoleState, request: Request, session: Session) -> Response:
    ctx = await state.panel_context(session)
    data, report = await diagnostics.build_bundle(ctx)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"isokron-diagnostics-{stamp}.zip"
    return Response(
        data,
        media_type="application/zip",
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
    )


# ---------------------------------------------------------------- writes
async def decide_escalation(state: ConsoleState, request: Request, session: Session) -> Any:
    body = await read_body(request)
    actions = await state.actions()
    return await actions.decide_escalation(
        session.principal,
        session.token_sha256,
        request.path_params["id"],
        _decision(body, "approve", "reject"),
        _reason(body),
    )


async def decide_proposal(state: ConsoleState, request: Request, session: Session) -> Any:
    body = await read_body(request)
    actions = await state.actions()
    return await actions.decide_proposal(
        session.principal,
        session.token_sha256,
        request.path_params["id"],
        str(body.get("kind") or "convention"),
        _decision(body, "accept", "reject"),
        _reason(body),
    )


async def set_policy(state: ConsoleState, request: Request, session: Session) -> Any:
    body = await read_body(request)
    key = str(body.get("policy_key") or "")
    if not key.startswith("policy."):
        raise ConfigError("policy_key must name a policy (policy.…)")
    if "value" not in body:
        raise ConfigError("give the policy's new JSON value")
    actions = await state.actions()
    return await actions.set_policy(session.principal, session.token_sha256, key, body["value"])


async def issue_token(state: ConsoleState, request: Request, session: Session) -> Any:
    body = await read_body(request)
    days = body.get("expires_in_days")
    expires = datetime.now(UTC) + timedelta(days=float(days)) if days else None
    actions = await state.actions()
    issued = await actions.issue_token(
        session.principal,
        session.token_sha256,
        str(body.get("actor_kind") or "kora"),
        str(body.get("label") or "")[:200],
        expires,
    )
    return {
        "token": issued.token,
        "token_id": issued.token_id,
        "token_prefix": issued.token_prefix,
        "event_id": issued.event_id,
        "expires_at": expires,
    }


async def revoke_token(state: ConsoleState, request: Request, session: Session) -> Any:
    actions = await state.actions()
    return await actions.revoke_token(
        session.principal, session.token_sha256, request.path_params["id"]
    )


def _decision(body: dict[str, Any], yes: str, no: str) -> bool:
    decision = body.get("decision")
    if decision not in (yes, no):
        raise ConfigError(f"decision must be {yes} or {no}")
    return bool(decision == yes)


def _reason(body: dict[str, Any]) -> str:
    reason = str(body.get("reason") or "").strip()
    if not reason:
        raise ConfigError("give a reason for the decision; it is chained with it")
    return reason[:2000]


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
