"""The one pipeline every tool call goes through, from token to chain.

    authenticate the token                      auth.Authenticator (cached <= TTL)
    -> governance snapshot of its workspace     governance.GovernanceCache (cached <= TTL)
    -> screen: workspace, kill switch,          pipeline.screen (pure, synchronous)
       capability, size caps, arguments,
       constitution
    -> one round trip (write tools):            group_writes.GroupWriter
       rate limit + the write and its chain       (concurrent writes of one workspace
       event, or the escalation, or the           share a transaction and a commit)
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

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
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
from isokron.gateway import results
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
from isokron.governance.arguments import RecordDenialArgs
from isokron.governance.operations import OPERATIONS, WRITE_QUOTAS, WRITES, quotas_for
from isokron.governance.policies import POLICIES, TOKEN_MAX_AGE
from isokron.governance.redaction import redact_secrets
from isokron.substrate import writes
from isokron.substrate.database_errors import DRIVER_ERRORS, translate
from isokron.substrate.group_writes import GroupWriter

log = logging.getLogger("isokron.gateway")

#: Longest reason stored in a denial event (the substrate's limit).
MAX_REASON_CHARS = 2000
#: Longest copy of the refused arguments stored in a denial event (the substrate's limit).
MAX_DENIAL_ARGUMENTS_CHARS = 4000
QUOTA_DENIAL_REASON = "A write quota of this actor is used up (rate limit, burst or cap)."
QUOTAS_BY_BUCKET = {q.bucket: q for op in OPERATIONS.values() for q in (*op.quotas, *WRITE_QUOTAS)}
QUOTA_WORDS = {
    "writes": "writes per minute",
    "burst": "writes per second",
    "nodes": "iso nodes per minute",
    "links": "iso links per minute",
    "proposals": "proposals per 24 hours",
    "overrides": "policy overrides per 24 hours",
    "open_escalations": "open escalations",
}
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
        self.writer = GroupWriter(gateway_pool)
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
            too_old = token_too_old(principal, governance)
            if too_old is not None:
                return self._refusal(tool, principal, "unauthenticated", too_old, started)
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
        except DRIVER_ERRORS as exc:
            # Whatever driver error a path did not translate (a pool or connection that went
            # away, a connection the server refused) is answered, never raised to the SDK.
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
        submission = _submission(spec, governance, prepared, verdict, idempotency_key)
        try:
            submitted = await self.writer.submit(
                workspace_id=principal.workspace_id,
                token_sha256=bytes.fromhex(principal.token_sha256),
                quotas=submission.quotas,
                op=submission.op,
                args=submission.args,
                idempotency_key=submission.idempotency_key,
                over_limit_denial=submission.over_limit_denial,
            )
        except (RefusalError, NotFoundError, ConflictError) as exc:
            return await self._refused_by_substrate(spec, principal, governance, exc, started)
        return self._answer_write(spec, principal, verdict, submitted, started)

    def _answer_write(
        self,
        spec: ToolSpec,
        principal: Principal,
        verdict: Verdict,
        submitted: writes.Submitted,
        started: float,
    ) -> CallToolResult:
        """The caller's answer once the write's round trip is done: the quota's or the
        constitution's refusal, or the result (marked escalated when the write was held)."""
        if not submitted.allowed and not verdict.before_rate_limit:
            code, message = quota_refusal(submitted)
            return self._refusal(
                spec.name,
                principal,
                code,
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
        governance: Governance,
        exc: RefusalError | NotFoundError | ConflictError,
        started: float,
    ) -> CallToolResult:
        """The substrate refused the write (rolled back): chain the denial in its place."""
        code, message = _refusal_of(exc)
        denial = _denial(spec.name, code, message)
        event_id: str | None = None
        try:
            submitted = await self.writer.submit(
                workspace_id=principal.workspace_id,
                token_sha256=bytes.fromhex(principal.token_sha256),
                quotas=quota_rows(governance, writes.RECORD_DENIAL, None),
                op=writes.RECORD_DENIAL,
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


@dataclass(frozen=True, slots=True)
class _Submission:
    """What one write call hands to ``writes.submit``: the operation its verdict calls for (the
    write itself, the escalation that holds it, or the denial event), with its quotas."""

    op: str
    args: dict[str, Any]
    idempotency_key: str | None
    quotas: list[dict[str, Any]]
    over_limit_denial: dict[str, Any]


def _submission(
    spec: ToolSpec,
    governance: Governance,
    prepared: Prepared,
    verdict: Verdict,
    idempotency_key: str | None,
) -> _Submission:
    """The submission for a write call given its verdict: refuse chains the denial, escalate
    raises an escalation holding the write, allow performs the write. A call over its quota
    chains the quota denial instead (or, refused at stages 1-3, its own denial)."""
    copy = _arguments_copy(prepared.args, governance)
    quota_denial = _denial(spec.name, "rate_limited", QUOTA_DENIAL_REASON, arguments=copy)
    if verdict.effect == "refuse":
        denial = _denial(
            spec.name, verdict.code or "", verdict.message, verdict.rule_id, arguments=copy
        )
        op, args, key, event_type = writes.RECORD_DENIAL, denial, None, None
        over_limit = denial if verdict.before_rate_limit else quota_denial
    elif verdict.effect == "escalate":
        op, key, over_limit = "raise_escalation", idempotency_key, quota_denial
        event_type = None
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
            quota_denial,
        )
        event_type = prepared.event_type
    quotas = quota_rows(governance, op, event_type)
    if verdict.effect == "escalate" and prepared.op:
        # A held write still counts as a request of its kind (e.g. a policy override).
        held = quota_rows(governance, prepared.op, prepared.event_type)
        quotas += [q for q in held if q not in quotas]
    return _Submission(op, args, key, quotas, over_limit)


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


def token_too_old(principal: Principal, governance: Governance) -> str | None:
    """Why the caller's token is past the workspace's maximum age, or None."""
    limit = governance.token_max_age_days
    if limit <= 0 or principal.issued_at is None:
        return None
    age_days = (time.time() - principal.issued_at) / 86400
    if age_days <= limit:
        return None
    return (
        f"The service token {principal.token_prefix}… was issued {age_days:.0f} days ago, "
        f"older than this workspace accepts ({TOKEN_MAX_AGE} = {limit} days); ask an "
        "operator for a new token."
    )


def _denial(
    tool: str,
    code: str,
    reason: str,
    rule_id: str | None = None,
    *,
    arguments: str | None = None,
) -> dict[str, Any]:
    """``record_denial`` arguments: the reason (redacted) and, when given, the copy of the
    refused arguments made by :func:`_arguments_copy`."""
    return RecordDenialArgs(
        tool=tool,
        code=code,
        reason=redact_secrets(reason)[:MAX_REASON_CHARS],
        rule_id=rule_id,
        arguments=arguments,
    ).sql_args()


def _arguments_copy(args: Mapping[str, Any], governance: Governance) -> str:
    """The refused call's arguments as compact JSON for its denial event, cut at
    MAX_DENIAL_ARGUMENTS_CHARS; secret-shaped text redacted unless the workspace's
    policy.kora_denial_events_redacted is false."""
    # ASCII: a lone surrogate in a refused argument must not make the denial unstorable.
    text = json.dumps(args, ensure_ascii=True, separators=(",", ":"), default=str)
    if governance.denials_redacted:
        constitution = governance.constitution
        text = constitution.redact(text) if constitution else redact_secrets(text)
    return text[:MAX_DENIAL_ARGUMENTS_CHARS]


def quota_rows(governance: Governance, op: str, event_type: str | None) -> list[dict[str, Any]]:
    """The quotas a call performing ``op`` counts against, with this workspace's limits."""
    return [
        {
            "bucket": q.bucket,
            "limit": governance.limits.get(q.policy, int(POLICIES[q.policy].default)),
            "window_seconds": q.window_seconds,
            "code": q.code,
        }
        for q in quotas_for(op, event_type)
    ]


def quota_refusal(submitted: writes.Submitted) -> tuple[str, str]:
    """The code and sentence of a call the admission refused."""
    quota = QUOTAS_BY_BUCKET.get(submitted.bucket or "writes", WRITES)
    what = QUOTA_WORDS.get(quota.bucket, quota.bucket)
    if submitted.retry_after_seconds is None:
        return quota.code, (
            f"Quota reached: this actor may have at most {submitted.limit} {what} "
            f"({quota.policy}); an operator must decide some before it raises more."
        )
    return quota.code, (
        f"Rate limit reached: {submitted.limit} {what} for this actor ({quota.policy}); "
        f"retry in {submitted.retry_after_seconds} seconds."
    )


def _unavailable(exc: BaseException) -> SubstrateError:
    translated = translate(exc)
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
