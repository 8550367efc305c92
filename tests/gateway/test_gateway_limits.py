"""The rate limit holds across gateway processes and restarts; concurrent writers keep one chain."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
from gateway_harness import (
    DENIED,
    Gateways,
    Session,
    data_of,
    error_of,
    events_since,
    head,
    issue,
    make_tenant,
    set_policy,
)

from isokron.substrate.dsn import SubstrateDSNs

NOTE = {"event_type": "kora.note.recorded", "payload": {"n": 1}}
#: Seconds a rate-limit test needs within one database minute (the budget's window).
WINDOW_MARGIN_SECONDS = 8.0


async def wait_for_a_fresh_window(admin_pool: asyncpg.Pool) -> None:
    """Sleep into the next minute of the database's clock if this one is nearly over.

    The budget is counted per calendar minute of the database's ``now()``; a window rolling
    over in the middle of a test would reset the count the test is checking.
    """
    epoch = float(await admin_pool.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
    left = 60.0 - epoch % 60.0
    if left < WINDOW_MARGIN_SECONDS:
        await asyncio.sleep(left + 0.5)


async def test_rate_limit_holds_across_two_processes_and_a_restart(
    substrate: SubstrateDSNs, admin_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    tenant = await make_tenant(admin_pool, "rate")
    await set_policy(admin_pool, tenant, "policy.kora_rate_limit_per_minute", 2)
    http = Gateways("http", substrate, tmp_path)
    first_stdio = Gateways("stdio", substrate, tmp_path)
    restarted = Gateways("stdio", substrate, tmp_path)
    await http.start()
    try:
        over_http = await http.session(tenant.kora_token)
        over_stdio = await first_stdio.session(tenant.kora_token)
        # Started now, used only after the process above has exited: the budget it spent
        # must hold in a process that never saw it, as after a restart.
        after_restart = await restarted.session(tenant.kora_token)
        await wait_for_a_fresh_window(admin_pool)

        data_of(await over_http.call("kora__append_event", NOTE))  # 1: process A
        data_of(await over_stdio.call("kora__append_event", NOTE))  # 2: process B
        await first_stdio.close()  # process B exits

        before = await head(admin_pool, tenant.workspace_id)
        refused = error_of(await after_restart.call("kora__append_event", NOTE))  # 3: process C
        assert refused["code"] == "rate_limited"
        assert "2 writes per minute" in refused["message"]
        assert 1 <= refused["retry_after_seconds"] <= 60
        [denial] = await events_since(admin_pool, tenant.workspace_id, before)
        assert denial["event_type"] == DENIED
        assert denial["payload"]["code"] == "rate_limited"
        assert refused["denial_event_id"] == str(denial["event_id"])

        # Later refusals in the same minute are not chained: a runaway client cannot flood it.
        before = await head(admin_pool, tenant.workspace_id)
        again = error_of(await over_http.call("kora__append_event", NOTE))  # 4: process A
        assert again["code"] == "rate_limited"
        assert "denial_event_id" not in again
        assert await head(admin_pool, tenant.workspace_id) == before

        # Reads are not rate-limited, and every actor has a budget of its own.
        data_of(await over_http.call("iso_node_search", {}))
        operator = await http.session(tenant.operator_token)
        data_of(await operator.call("kora__append_event", {"event_type": "operator.note.made"}))
    finally:
        await restarted.close()
        await first_stdio.close()
        await http.close()


async def test_eight_concurrent_writers_keep_one_unbroken_chain(
    substrate: SubstrateDSNs, admin_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    tenant = await make_tenant(admin_pool, "busy")
    await set_policy(admin_pool, tenant, "policy.kora_rate_limit_per_minute", 100000)
    # 40 nodes in well under a minute by one actor: lift its per-type quota too.
    await set_policy(admin_pool, tenant, "policy.kora_max_nodes_per_minute", 100000)
    http = Gateways("http", substrate, tmp_path)
    stdio = Gateways("stdio", substrate, tmp_path)
    await http.start()
    sessions: list[Session] = []
    try:
        tokens = [(await issue(admin_pool, tenant, "kora")).token for _ in range(8)]
        sessions = list(
            await asyncio.gather(
                *(
                    (http if i % 2 else stdio).session(token)  # 4 over HTTP, 4 stdio processes
                    for i, token in enumerate(tokens)
                )
            )
        )
        before = await head(admin_pool, tenant.workspace_id)
        per_writer = 10

        async def writer(index: int, session: Session) -> list[str]:
            ids = []
            for n in range(per_writer):
                if n % 2:
                    result = await session.call(
                        "iso_node_create", {"node_type": "fact", "title": f"w{index}-{n}"}
                    )
                else:
                    result = await session.call(
                        "kora__append_event",
                        {"event_type": "kora.load.tested", "payload": {"w": index, "n": n}},
                    )
                ids.append(data_of(result)["event_id"])
            return ids

        written = await asyncio.gather(*(writer(i, s) for i, s in enumerate(sessions)))
        event_ids = [event_id for ids in written for event_id in ids]
        assert len(set(event_ids)) == 8 * per_writer

        events = await events_since(admin_pool, tenant.workspace_id, before)
        assert [e["seq"] for e in events] == list(range(before + 1, before + 1 + 8 * per_writer))
        assert {str(e["event_id"]) for e in events} == set(event_ids)
        previous = await admin_pool.fetchval(
            "SELECT el.this_event_hash FROM hivex_foundation.event_log el "
            "JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id "
            "WHERE t.clerk_org_id = $1 AND el.seq = $2",
            tenant.workspace_id,
            before,
        )
        for event in events:
            assert event["prev_event_hash"] == previous, event["seq"]
            previous = event["this_event_hash"]
        nodes = await admin_pool.fetchval(
            "SELECT count(*) FROM kronicle.iso_nodes WHERE workspace_id = $1", tenant.workspace_id
        )
        assert nodes == 8 * per_writer // 2

        # The same write retried by all eight at once (one actor): one write, one result.
        key = f"race-{uuid.uuid4()}"
        before = await head(admin_pool, tenant.workspace_id)
        results = await asyncio.gather(
            *(s.call("kora__append_event", {**NOTE, "idempotency_key": key}) for s in sessions)
        )
        assert len({data_of(r)["event_id"] for r in results}) == 1
        assert sorted(data_of(r)["replayed"] for r in results) == [False] + [True] * 7
        assert len(await events_since(admin_pool, tenant.workspace_id, before)) == 1
    finally:
        await stdio.close()
        await http.close()
