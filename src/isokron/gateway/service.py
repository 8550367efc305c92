"""The one pipeline every tool call goes through, from token to chain.

    authenticate the token                      auth.Authenticator (cached <= TTL)
    -> governance snapshot of its workspace     governance.GovernanceCache (cached <= TTL)
    -> screen: workspace, kill switch,          pipeline.screen (pure, synchronous)
       capability, size caps, arguments,
       constitution
    -> one round trip (write tools):            store.submit
       rate limit + the write and its chain
       event, or the escalation, or the
       denial event -- in one transaction
    -> one decision log line                    decision_log.log_decision

The rate limit is stage 4 of the pipeline but is answered by the database; a verdict from the
pure stages is combined with it by stage order, so a call refused at stages 1-3 keeps its code
while stages 5-7 yield to ``rate_limited``. Write tools chain every refusal as a
``gateway.write.denied`` event (bounded by the rate budget, see ``store``). Read tools are not
chained, refused or not; they are not rate-limited. A call without a valid token is not
chained either: there is no actor to attribute it to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import asyncpg
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp_types import CallToolResult

from isokron.errors import (
    ConflictError,
    NotFoundError,
    RefusalError,
    SubstrateError,
    SubstrateUnavailableError,
)
from isokron.gateway import results, store
from isokron.gateway.auth import Authenticator, Principal, loggable_prefix
from isokron.gateway.decision_log import log_decision
from isokron.gateway.governance import Governance, GovernanceCache
from isokron.gateway.operations import (
    CALL_ARGUMENTS,
    SPECS,
    ArgumentProblem,
    Prepared,
    ToolSpec,
)
from isokron.gateway.pipeline import Screening, Verdict, screen
from isokron.gateway.settings import Transport
from isokron.substrate.connection import translate_pg_error
from isokron.substrate.constitution import redact_secrets

log = logging.getLogger("isokron.gateway")

#: Longest reason stored in a denial event (the substrate's limit).
MAX_REASON_CHARS = 2000
ESCALATED_NOTE = (
    " The write was not made: it waits in the escalation queue for an operator's decision "
    "(kora__read_escalation_queue shows it)."
)


class Gateway:
    """Runs tool calls through the pipeline. Borrows its two pools; never closes them.

    ``reader_pool`` connects as the reader role (governance and the read tools);
    ``gateway_pool`` as the gateway role (authentication, rate limit, writes).
    """

    def __init__(
        self,
        *,
        reader_pool: asyncpg.Pool,
        gateway_pool: asyncpg.Pool,
        transport: Transport,
        governance_ttl: float,
        stdio_token: str | None = None,
    ) -> None:
        self.reader_pool = reader_pool
        self.gateway_pool = gateway_pool
        self.transport = transport
        self.authenticator = Authenticator(gateway_pool, ttl=governance_ttl)
        self.governance = GovernanceCache(reader_pool, ttl=governance_ttl)
        self._stdio_token = stdio_token if transport == "stdio" else None

    async def call(
        self,
        tool: str,
        request: Any,
        arguments: Mapping[str, Any],
        *,
        argument_error: str | None = None,
    ) -> CallToolResult:
        """Decide and perform one call of ``tool``.

        ``request`` is the transport's request (a Starlette request carrying the SDK's
        authenticated user over HTTP; None over stdio). ``argument_error`` is set when the
        arguments failed the tool's schema: the call then runs the pipeline up to the argument
        stage and is refused there (or earlier).
        """
        started = time.perf_counter()
        spec = SPECS[tool]
        try:
            principal = await self._principal(request)
        except RefusalError as refusal:
            log_decision(
                tool=tool,
                outcome="refused",
                code=refusal.code,
                token_prefix=loggable_prefix(self._stdio_token),
                message=refusal.message,
                started=started,
            )
            return results.error(refusal.code, refusal.message)
        except SubstrateError as exc:
            return self._failed(tool, exc, started, None)
        try:
            governance = await self.governance.get(principal.workspace_id, principal.actor_kind)
            prepared, problem = _prepare(spec, arguments, governance, argument_error)
            key = arguments.get("idempotency_key") if spec.writes else None
            verdict = screen(
                principal,
                governance,
                Screening(
                    tool=tool,
                    capability=spec.capability,
                    writes=spec.writes,
                    arguments=prepared.args,
                    workspace_id=arguments.get("workspace_id"),
                    event_type=prepared.event_type,
                    argument_error=problem,
                    inline_content=prepared.inline_content,
                    summary=prepared.summary,
                    idempotency_key=key if isinstance(key, str) else None,
                ),
            )
            if spec.writes:
                return await self._write(
                    spec,
                    principal,
                    governance,
                    prepared,
                    verdict,
                    key if isinstance(key, str) else None,
                    started,
                )
            return await self._read(spec, principal, prepared, verdict, started)
        except SubstrateError as exc:
            return self._failed(tool, exc, started, principal)
        except (asyncpg.InterfaceError, OSError) as exc:
            # The reads translate server errors but not a pool or connection that went away.
            return self._failed(tool, _unavailable(exc), started, principal)

    async def _principal(self, request: Any) -> Principal:
        if self.transport == "stdio":
            return await self.authenticator.authenticate(self._stdio_token)
        scope = getattr(request, "scope", None)
        user = scope.get("user") if isinstance(scope, Mapping) else None
        if isinstance(user, AuthenticatedUser) and user.access_token.claims:
            # Verified by GatewayTokenVerifier for this very HTTP request.
            return Principal.from_claims(user.access_token.claims)
        return await self.authenticator.authenticate(None)

    # ----------------------------------------------------------------------------- writes

    async def _write(
        self,
        spec: ToolSpec,
        principal: Principal,
        governance: Governance,
        prepared: Prepared,
        verdict: Verdict,
        idempotency_key: str | None,
        started: float,
    ) -> CallToolResult:
        limit = governance.rate_limit_per_minute
        rate_denial = _denial(
            spec.name, "rate_limited", f"Rate limit of {limit} writes per minute reached."
        )
        if verdict.effect == "refuse":
            denial = _denial(spec.name, verdict.code or "", verdict.message, verdict.rule_id)
            op, args, key = store.RECORD_DENIAL, denial, None
            over_limit = denial if verdict.before_rate_limit else rate_denial
        elif verdict.effect == "escalate":
            op, key, over_limit = "raise_escalation", idempotency_key, rate_denial
            args = {
                "tool": spec.name,
                "rule_id": verdict.rule_id,
                "reason": verdict.message[:MAX_REASON_CHARS],
                "request": {"op": prepared.op, "args": prepared.args},
            }
        else:
            op, args, key, over_limit = (
                prepared.op or "",
                prepared.args,
                idempotency_key,
                rate_denial,
            )
        try:
            submitted = await store.submit(
                self.gateway_pool,
                workspace_id=principal.workspace_id,
                actor_id=principal.actor_id,
                limit=limit,
                op=op,
                args=args,
                idempotency_key=key,
                over_limit_denial=over_limit,
            )
        except (RefusalError, NotFoundError, ConflictError) as exc:
            return await self._refused_by_substrate(spec, principal, limit, exc, started)

        if not submitted.allowed and not verdict.before_rate_limit:
            message = (
                f"Rate limit reached: {limit} writes per minute for this actor; "
                f"retry in {submitted.retry_after_seconds} seconds."
            )
            return self._refusal(
                spec.name,
                principal,
                "rate_limited",
                message,
                started,
                denial_event_id=submitted.event_id,
                retry_after_seconds=submitted.retry_after_seconds,
            )
        if verdict.effect == "refuse":
            return self._refusal(
                spec.name,
                principal,
                verdict.code or "",
                verdict.message,
                started,
                rule_id=verdict.rule_id,
                denial_event_id=submitted.event_id,
            )
        result = dict(submitted.result or {})
        if verdict.effect == "escalate":
            result.update(
                escalated=True, rule_id=verdict.rule_id, message=verdict.message + ESCALATED_NOTE
            )
            outcome = "escalated"
        else:
            outcome = "replayed" if result.get("replayed") else "allowed"
        log_decision(
            tool=spec.name,
            outcome=outcome,
            actor_id=principal.actor_id,
            actor_kind=principal.actor_kind,
            workspace_id=principal.workspace_id,
            token_prefix=principal.token_prefix,
            event_id=submitted.event_id,
            rule_id=verdict.rule_id,
            started=started,
        )
        return results.success(result)

    async def _refused_by_substrate(
        self,
        spec: ToolSpec,
        principal: Principal,
        limit: int,
        exc: RefusalError | NotFoundError | ConflictError,
        started: float,
    ) -> CallToolResult:
        """The substrate refused the write (rolled back): chain the denial in its place."""
        code, message = _refusal_of(exc)
        denial = _denial(spec.name, code, message)
        event_id: str | None = None
        try:
            submitted = await store.submit(
                self.gateway_pool,
                workspace_id=principal.workspace_id,
                actor_id=principal.actor_id,
                limit=limit,
                op=store.RECORD_DENIAL,
                args=denial,
                idempotency_key=None,
                over_limit_denial=denial,
            )
            event_id = submitted.event_id
        except (RefusalError, SubstrateError) as failure:
            log.error(
                "[isokron.gateway.denial_not_chained] %s refused by the substrate (%s) but its "
                "denial event could not be appended: %s",
                spec.name,
                code,
                redact_secrets(str(failure)),
            )
        return self._refusal(spec.name, principal, code, message, started, denial_event_id=event_id)

    # ------------------------------------------------------------------------------ reads

    async def _read(
        self,
        spec: ToolSpec,
        principal: Principal,
        prepared: Prepared,
        verdict: Verdict,
        started: float,
    ) -> CallToolResult:
        if verdict.effect != "allow":
            return self._refusal(spec.name, principal, verdict.code or "", verdict.message, started)
        assert spec.read is not None
        try:
            data = await spec.read(self.reader_pool, principal, prepared.args)
        except (RefusalError, NotFoundError, ConflictError) as exc:
            code, message = _refusal_of(exc)
            return self._refusal(spec.name, principal, code, message, started)
        log_decision(
            tool=spec.name,
            outcome="allowed",
            actor_id=principal.actor_id,
            actor_kind=principal.actor_kind,
            workspace_id=principal.workspace_id,
            token_prefix=principal.token_prefix,
            started=started,
        )
        return results.success(data)

    # ---------------------------------------------------------------------------- outcomes

    def _refusal(
        self,
        tool: str,
        principal: Principal,
        code: str,
        message: str,
        started: float,
        *,
        rule_id: str | None = None,
        denial_event_id: str | None = None,
        retry_after_seconds: int | None = None,
    ) -> CallToolResult:
        log_decision(
            tool=tool,
            outcome="refused",
            code=code,
            actor_id=principal.actor_id,
            actor_kind=principal.actor_kind,
            workspace_id=principal.workspace_id,
            token_prefix=principal.token_prefix,
            event_id=denial_event_id,
            rule_id=rule_id,
            message=message,
            started=started,
        )
        return results.error(
            code,
            message,
            rule_id=rule_id,
            denial_event_id=denial_event_id,
            retry_after_seconds=retry_after_seconds,
        )

    def _failed(
        self, tool: str, exc: SubstrateError, started: float, principal: Principal | None
    ) -> CallToolResult:
        if isinstance(exc, SubstrateUnavailableError):
            code = results.UNAVAILABLE
            message = "The memory substrate could not be reached; try again shortly."
        else:
            code = results.INTERNAL
            message = (
                "The gateway could not complete the call; its operator can find why in the log."
            )
        log_decision(
            tool=tool,
            outcome="error",
            code=code,
            actor_id=principal.actor_id if principal else None,
            actor_kind=principal.actor_kind if principal else None,
            workspace_id=principal.workspace_id if principal else None,
            token_prefix=principal.token_prefix if principal else None,
            message=str(exc),
            started=started,
        )
        # A retry hint for an outage (the same as the HTTP transport's Retry-After).
        retry = 1 if code == results.UNAVAILABLE else None
        return results.error(code, message, retry_after_seconds=retry)


def _prepare(
    spec: ToolSpec,
    arguments: Mapping[str, Any],
    governance: Governance,
    argument_error: str | None,
) -> tuple[Prepared, str | None]:
    """What the pipeline screens; for arguments that failed validation, the raw ones."""
    if argument_error is None:
        try:
            return spec.prepare(arguments, governance), None
        except ArgumentProblem as problem:
            argument_error = str(problem)
    raw = {k: v for k, v in arguments.items() if k not in CALL_ARGUMENTS}
    return Prepared(None, raw), argument_error


def _denial(tool: str, code: str, reason: str, rule_id: str | None = None) -> dict[str, Any]:
    """``record_denial`` arguments: never the refused content, never a secret."""
    return {
        "tool": tool,
        "code": code,
        "reason": redact_secrets(reason)[:MAX_REASON_CHARS],
        "rule_id": rule_id,
    }


def _unavailable(exc: BaseException) -> SubstrateError:
    translated = translate_pg_error(exc)
    if isinstance(translated, SubstrateError):
        return translated
    return SubstrateUnavailableError(f"the database could not be reached: {exc}")


def _refusal_of(exc: RefusalError | NotFoundError | ConflictError) -> tuple[str, str]:
    """The stable code and the sentence of a refusal raised by the substrate."""
    if isinstance(exc, RefusalError):
        return exc.code, _sentence(exc.message)
    return ("not_found" if isinstance(exc, NotFoundError) else "conflict"), _sentence(str(exc))


def _sentence(message: str) -> str:
    """A substrate message as a sentence: capitalized (unless it starts with an identifier such
    as ``event_type``) and ending in a full stop."""
    text = message.strip() or "the substrate refused the call"
    first = text.split(" ", 1)[0]
    if not any(c in first for c in "_."):
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
