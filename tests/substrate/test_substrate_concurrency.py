"""Appends of one tenant are serialized into one gapless chain; tenants append in parallel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from isokron.substrate import audit, connection, writes
from isokron.substrate.dsn import SubstrateDSNs

WORKERS = 8
EVENTS_PER_WORKER = 50
# create_workspace: workspace, charter, policies, capabilities, constitution; then kora's token.
SEED_EVENTS = 6

SELECT_EVENTS_SQL = """
SELECT seq, event_type, payload, prev_event_hash, this_event_hash
FROM hivex_foundation.event_log WHERE tenant_id = $1 ORDER BY seq
"""


@pytest.fixture(scope="module")
async def gateway_pool(substrate: SubstrateDSNs) -> AsyncIterator[asyncpg.Pool]:
    pool = await connection.create_pool(substrate.gateway, min_size=WORKERS, max_size=WORKERS)
    yield pool
    await pool.close()


async def _append_many(pool: asyncpg.Pool, token_hash: bytes, worker: int) -> list[dict[str, Any]]:
    results = []
    for i in range(EVENTS_PER_WORKER):
        results.append(
            await writes.write_with_token(
                pool,
                "append_event",
                token_hash,
                {"event_type": "kora.load.appended", "payload": {"worker": worker, "i": i}},
            )
        )
    return results


async def _kora_token(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace) -> bytes:
    async with admin_pool.acquire() as conn:
        issued = await writes.issue_token(
            conn, ws.workspace_id, ws.operator_actor_id, ws.actors["kora"]
        )
    return writes.token_sha256(issued.token)


async def _chain(admin_pool: asyncpg.Pool, tenant_id: UUID) -> list[asyncpg.Record]:
    return await admin_pool.fetch(SELECT_EVENTS_SQL, tenant_id)


def _assert_gapless_and_linked(rows: list[asyncpg.Record], expected: int) -> None:
    assert [r["seq"] for r in rows] == list(range(1, expected + 1))
    for prev, row in zip(rows, rows[1:], strict=False):
        assert row["prev_event_hash"] == prev["this_event_hash"], f"link broken at {row['seq']}"


async def test_eight_connections_appending_to_one_tenant_make_one_gapless_chain(
    gateway_pool: asyncpg.Pool,
    admin_pool: asyncpg.Pool,
    make_workspace: Callable,
    substrate: SubstrateDSNs,
) -> None:
    ws = await make_workspace("conc-one")
    token = await _kora_token(admin_pool, ws)
    per_worker = await asyncio.gather(
        *(_append_many(gateway_pool, token, w) for w in range(WORKERS))
    )

    total = SEED_EVENTS + WORKERS * EVENTS_PER_WORKER
    seqs = sorted(r["seq"] for results in per_worker for r in results)
    assert seqs == list(range(SEED_EVENTS + 1, total + 1))  # every append got its own seq
    rows = await _chain(admin_pool, ws.tenant_id)
    _assert_gapless_and_linked(rows, total)
    written = sorted(
        (r["payload"]["worker"], r["payload"]["i"]) for r in rows if r["seq"] > SEED_EVENTS
    )
    assert written == [(w, i) for w in range(WORKERS) for i in range(EVENTS_PER_WORKER)]
    # The appends really interleaved: the workers' events are not in worker blocks.
    order = [r["payload"]["worker"] for r in rows if r["seq"] > SEED_EVENTS]
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert switches > WORKERS

    report = audit.verify_workspace(substrate.admin, ws.workspace_id)
    assert report.ok, report.to_dict()
    assert report.chain.events_checked == total
    head = await admin_pool.fetchrow(
        "SELECT last_seq, last_hash FROM hivex_foundation.chain_head WHERE tenant_id = $1",
        ws.tenant_id,
    )
    assert head["last_seq"] == total and head["last_hash"] == rows[-1]["this_event_hash"]


async def test_eight_tenants_in_parallel_each_get_their_own_gapless_chain(
    gateway_pool: asyncpg.Pool,
    admin_pool: asyncpg.Pool,
    make_workspace: Callable,
    substrate: SubstrateDSNs,
) -> None:
    workspaces = [await make_workspace(f"conc-{n}") for n in range(WORKERS)]
    tokens = [await _kora_token(admin_pool, ws) for ws in workspaces]
    await asyncio.gather(*(_append_many(gateway_pool, tokens[n], n) for n in range(WORKERS)))

    total = SEED_EVENTS + EVENTS_PER_WORKER
    for n, ws in enumerate(workspaces):
        rows = await _chain(admin_pool, ws.tenant_id)
        _assert_gapless_and_linked(rows, total)
        assert {r["payload"]["worker"] for r in rows if r["seq"] > SEED_EVENTS} == {n}
        assert rows[0]["prev_event_hash"] == bytes(32)  # each chain starts at genesis
        report = audit.verify_workspace(substrate.admin, ws.workspace_id)
        assert report.ok, report.to_dict()
        assert report.chain.events_checked == total
