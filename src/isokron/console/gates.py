"""Boot gates: the checks an operator wants green before trusting a workspace.

Each gate answers ``pass`` or ``fail`` with the reason, or ``unknown`` when the console was not
told where to look (no gateway URL, no Hermes home). One gate failing never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from yoyo import read_migrations

from isokron.console.checkpoints import CheckpointStore
from isokron.errors import IsoKronError
from isokron.substrate import admin, audit, reads
from isokron.substrate.migrate import migrations_dir

log = logging.getLogger("isokron.console.gates")

SELECT_APPLIED_MIGRATIONS_SQL = "SELECT migration_id FROM _yoyo_migration"
GATEWAY_TIMEOUT_SECONDS = 2.0
EXPIRY_WARNING = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Gate:
    key: str
    title: str
    status: str  # pass | fail | unknown
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "title": self.title, "status": self.status, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class GateContext:
    workspace_id: str
    admin_dsn: str
    admin_pool: asyncpg.Pool
    reader_pool: asyncpg.Pool
    checkpoints: CheckpointStore
    gateway_url: str | None
    hermes_home: Path | None


async def _database(ctx: GateContext) -> tuple[str, str]:
    await ctx.reader_pool.fetchval("SELECT 1")
    version = await ctx.admin_pool.fetchval("SHOW server_version")
    return "pass", f"PostgreSQL {version} answers for the reader and admin roles"


async def _migrations(ctx: GateContext) -> tuple[str, str]:
    packaged = {m.id for m in read_migrations(str(migrations_dir()))}
    applied = {r["migration_id"] for r in await ctx.admin_pool.fetch(SELECT_APPLIED_MIGRATIONS_SQL)}
    pending = sorted(packaged - applied)
    if pending:
        return "fail", f"{len(pending)} pending: {', '.join(pending)} — run `isokron db upgrade`"
    return "pass", f"all {len(packaged)} migrations applied"


async def _charter(ctx: GateContext) -> tuple[str, str]:
    charter = await reads.read_active_role_charter(ctx.reader_pool, ctx.workspace_id)
    return "pass", f"v{charter.version} matches its SHA-256 {charter.content_hash[:16]}…"


async def _chain(ctx: GateContext) -> tuple[str, str]:
    cps = ctx.checkpoints.load(ctx.workspace_id)
    result = await asyncio.to_thread(
        audit.verify_workspace, ctx.admin_dsn, ctx.workspace_id, checkpoints=cps
    )
    if not result.ok:
        first = (result.chain.problems or result.findings or [None])[0]
        return "fail", f"verification failed: {getattr(first, 'message', 'see Verification')}"
    n, rows = result.chain.events_checked, result.to_dict().get("rows_checked")
    proven = f" and {rows} state rows" if rows is not None else ""
    if not cps:
        return "fail", f"{n} events{proven} verified, but no checkpoint confirms them: take one"
    last = max(cp.seq for cp in cps)
    return "pass", f"{n} events{proven} verified; checkpoint at seq {last} confirmed"


async def _tokens(ctx: GateContext) -> tuple[str, str]:
    async with ctx.admin_pool.acquire() as conn:
        rows = await admin.list_tokens(conn, ctx.workspace_id)
    active = [r for r in rows if r["status"] == "active"]
    kinds = {r["actor_kind"] for r in active}
    if "kora" not in kinds:
        return "fail", "no active wsk_* token for kora: `isokron token issue WORKSPACE`"
    expired = sum(1 for r in rows if r["status"] == "expired")
    soon = datetime.now(UTC) + EXPIRY_WARNING
    expiring = sum(1 for r in active if r["expires_at"] is not None and r["expires_at"] < soon)
    note = f"; {expiring} expire within {EXPIRY_WARNING.days} days" if expiring else ""
    return "pass", f"{len(active)} active ({', '.join(sorted(kinds))}); {expired} expired{note}"


async def _gateway(ctx: GateContext) -> tuple[str, str]:
    if not ctx.gateway_url:
        return "unknown", "no gateway URL given (isokron console --gateway-url)"
    url = ctx.gateway_url.rstrip("/") + "/healthz"

    def probe() -> tuple[str, str]:
        try:
            with urllib.request.urlopen(url, timeout=GATEWAY_TIMEOUT_SECONDS) as resp:
                return "pass", f"{url} answered {resp.status}"
        except urllib.error.HTTPError as exc:
            return "fail", f"{url} answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return "fail", f"{url} unreachable: {getattr(exc, 'reason', exc)}"

    return await asyncio.to_thread(probe)


async def _outbox(ctx: GateContext) -> tuple[str, str]:
    if ctx.hermes_home is None:
        return "unknown", (
            "no Hermes home given, so the provider's outbox is unknown "
            "(isokron console --hermes-home DIR, or HERMES_HOME)"
        )
    # Imported here: the provider package is only needed once a Hermes home is known.
    from isokron.provider.outbox import OutboxError, outbox_path, read_status

    path = outbox_path(ctx.hermes_home)
    try:
        status = await asyncio.to_thread(read_status, path)  # read-only: never creates it
    except OutboxError as exc:
        return "fail", str(exc)
    if status is None:
        return "pass", f"no outbox at {path}: nothing was ever queued"
    mine = {g["status"]: g for g in status["workspaces"] if g["workspace_id"] == ctx.workspace_id}
    refused = mine.get("refused")
    kept = f"; {refused['writes']} refused kept (isokron outbox status)" if refused else ""
    pending = mine.get("pending")
    if pending:
        return "fail", (
            f"{pending['writes']} write(s) of this workspace waiting in {path}, oldest "
            f"{pending['oldest_age_seconds']}s: `isokron outbox flush`{kept}"
        )
    return "pass", f"no write of this workspace waiting in {path}{kept}"


GATES: tuple[tuple[str, str, Callable[[GateContext], Awaitable[tuple[str, str]]]], ...] = (
    ("database", "Database reachable", _database),
    ("migrations", "Migrations current", _migrations),
    ("charter", "Charter verified", _charter),
    ("chain", "Chain verified up to a checkpoint", _chain),
    ("tokens", "wsk_* token valid", _tokens),
    ("gateway", "Gateway reachable", _gateway),
    ("outbox", "Outbox empty", _outbox),
)


async def _one(key: str, title: str, check: Any, ctx: GateContext) -> Gate:
    try:
        status, reason = await check(ctx)
    except (
        IsoKronError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        OSError,
        ValueError,
    ) as exc:
        status, reason = "fail", f"{type(exc).__name__}: {exc}"
    return Gate(key, title, status, reason)


async def run_gates(ctx: GateContext) -> list[Gate]:
    """Every gate, concurrently; a failing gate reports its reason instead of raising."""
    return list(await asyncio.gather(*(_one(k, t, c, ctx) for k, t, c in GATES)))
