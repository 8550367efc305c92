"""The gateway's periodic maintenance: while it runs, what is overdue gets closed by itself.

Every ``interval`` seconds the gateway calls ``isokron_api.maintain`` for every workspace:
escalations past ``policy.kora_escalation_sla_hours`` and proposals past
``policy.kora_proposal_expiry_days`` are closed as expired, scratchpad entries past
``policy.kora_scratchpad_retention_days`` archived (each with its chained event), idempotency
keys past ``policy.kora_idempotency_ttl_hours`` deleted. ``isokron maintain`` does the same on
demand. A workspace whose maintenance fails is logged and does not stop the others; a failed
run is logged and retried at the next tick; it never stops the gateway.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from isokron.errors import IsoKronError
from isokron.substrate import writes

log = logging.getLogger("isokron.gateway.maintenance")


async def run_once(pool: asyncpg.Pool) -> dict[str, int]:
    """One maintenance pass over every workspace; returns the totals of what it closed."""
    result = await writes.maintain(pool)
    totals: dict[str, int] = {}
    for workspace in result.get("workspaces", []):
        if "failed" in workspace:  # the others were still maintained (migration 0044)
            log.warning(
                "[isokron.gateway.maintenance_failed] workspace %s: %s",
                workspace.get("workspace_id"),
                workspace["failed"],
            )
        for key, value in workspace.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    if any(totals.values()):
        log.info("[isokron.gateway.maintenance] %s", totals)
    return totals


async def run_periodically(pool: asyncpg.Pool, interval: float) -> None:
    """Run :func:`run_once` every ``interval`` seconds until cancelled.

    The first pass waits one interval too: a gateway that is starting serves its first calls
    before it spends a connection and database time on maintenance.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await run_once(pool)
        except IsoKronError as exc:
            log.warning("[isokron.gateway.maintenance_failed] %s; retrying in %gs", exc, interval)
