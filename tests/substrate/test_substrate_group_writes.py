"""Group appends (migration 0060, ``isokron.substrate.group_writes``): concurrent writes of one
workspace share a transaction and a commit, each still its own row, event and outcome."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from isokron.errors import ConflictError, NotFoundError, RefusalError, SubstrateError
from isokron.substrate import audit, connection, writes
from isokron.substrate.dsn import SubstrateDSNs
from isokron.substrate.group_writes import GroupWriter

CALLERS = 24
UNLIMITED = [{"bucket": "writes", "limit": 1_000_000, "window_seconds": 60}]
DENIAL = {"tool": "kora__append_event", "code": "rate_limited", "reason": "over the budget"}
SELECT_EVENTS_SQL = """
SELECT seq, event_type, payload, prev_event_hash, this_event_hash
FROM hivex_foundation.event_log WHERE workspace_id = $1 ORDER BY seq
"""
# A commit that fails: a deferred constraint trigger refuses, at COMMIT, an event carrying the
# marker. Planted by one test and dropped after it.
FAIL_AT_COMMIT_SQL = """
CREATE FUNCTION public.test_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload ->> 'fail_at_commit' = 'yes' THEN
        RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'P0001';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_fail_at_commit AFTER INSERT ON hivex_foundation.event_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.test_fail_at_commit();
"""
DROP_FAIL_AT_COMMIT_SQL = """
DROP TRIGGER IF EXISTS test_fail_at_commit ON hivex_foundation.event_log;
DROP FUNCTION IF EXISTS public.test_fail_at_commit();
"""


@pytest.fixture(scope="module")
async def gateway_pool(substrate: SubstrateDSNs) -> AsyncIterator[asyncpg.Pool]:
    pool = await connection.create_pool(substrate.gateway, min_size=2, max_size=8)
    yield pool
    await pool.close()


async def _token(
    admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace, kind: str = "kora"
) -> bytes:
    async with admin_pool.acquire() as conn:
        issued = await writes.issue_token(
            conn, ws.workspace_id, ws.operator_actor_id, ws.actors[kind]
        )
    return writes.token_sha256(issued.token)


def _append(n: int, **payload: Any) -> dict[str, Any]:
    return {"event_type": "kora.group.appended", "payload": {"n": n, **payload}}


def _call(
    ws: writes.CreatedWorkspace,
    token: bytes,
    args: dict[str, Any],
    *,
    op: str = "append_event",
    quotas: list[dict[str, Any]] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    return {
        "workspace_id": ws.workspace_id,
        "token_sha256": token,
        "quotas": UNLIMITED if quotas is None else quotas,
        "op": op,
        "args": args,
        "idempotency_key": key,
        "over_limit_denial": DENIAL,
    }


async def _events(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace) -> list[asyncpg.Record]:
    async with (
        admin_pool.acquire() as conn,
        connection.workspace_transaction(conn, ws.workspace_id),
    ):
        return list(await conn.fetch(SELECT_EVENTS_SQL, ws.workspace_id))


async def test_concurrent_callers_of_one_tenant_share_groups_and_get_a_gapless_chain(
    gateway_pool: asyncpg.Pool,
    admin_pool: asyncpg.Pool,
    make_workspace: Callable,
    substrate: SubstrateDSNs,
) -> None:
    ws = await make_workspace("group-one")
    token = await _token(admin_pool, ws)
    before = len(await _events(admin_pool, ws))
    writer = GroupWriter(gateway_pool, max_group=10)

    results = await asyncio.gather(
        *(writer.submit(**_call(ws, token, _append(i))) for i in range(CALLERS))
    )

    # Every caller was queued before the first group ran: groups of 10, 10 and 4.
    assert writer.stats.sizes == {10: 2, 4: 1}
    assert all(r.allowed and r.result is not None for r in results)
    seqs = sorted(int(r.result["seq"]) for r in results if r.result)
    assert seqs == list(range(before + 1, before + CALLERS + 1))
    rows = await _events(admin_pool, ws)
    assert [r["seq"] for r in rows] == list(range(1, before + CALLERS + 1))
    for prev, row in zip(rows, rows[1:], strict=False):
        assert row["prev_event_hash"] == prev["this_event_hash"]
    assert sorted(r["payload"]["n"] for r in rows[before:]) == list(range(CALLERS))
    report = audit.verify_workspace(substrate.admin, ws.workspace_id)
    assert report.ok, report.to_dict()


async def _single_error(gateway_pool: asyncpg.Pool, call: dict[str, Any]) -> BaseException:
    """The error today's one-call path raises for ``call`` (a group of one)."""
    with pytest.raises((RefusalError, NotFoundError, ConflictError)) as caught:
        await writes.submit(gateway_pool, **call)
    return caught.value


async def test_a_refused_item_gets_its_own_typed_error_and_the_others_commit(
    gateway_pool: asyncpg.Pool, admin_pool: asyncpg.Pool, make_workspace: Callable
) -> None:
    ws = await make_workspace("group-refused")
    token = await _token(admin_pool, ws)
    before = len(await _events(admin_pool, ws))
    bad_type = _call(ws, token, {"event_type": "Not Dotted", "payload": {}})
    unknown_node = _call(
        ws, token, {"node_id": str(uuid.uuid4()), "title": "x"}, op="iso_node_supersede"
    )
    writer = GroupWriter(gateway_pool)

    outcomes = await asyncio.gather(
        writer.submit(**_call(ws, token, _append(0))),
        writer.submit(**bad_type),
        writer.submit(**_call(ws, token, _append(1))),
        writer.submit(**unknown_node),
        writer.submit(**_call(ws, token, _append(2))),
        return_exceptions=True,
    )

    assert writer.stats.sizes == {5: 1}
    for got, call in ((outcomes[1], bad_type), (outcomes[3], unknown_node)):
        expected = await _single_error(gateway_pool, call)
        assert type(got) is type(expected)
        assert str(got) == str(expected)
        assert getattr(got, "code", None) == getattr(expected, "code", None)
    assert isinstance(outcomes[1], RefusalError) and outcomes[1].code == "invalid_argument"
    assert isinstance(outcomes[3], NotFoundError)
    rows = await _events(admin_pool, ws)
    assert [r["payload"]["n"] for r in rows[before:]] == [0, 1, 2]
    assert [r["seq"] for r in rows] == list(range(1, before + 4))


async def test_over_quota_inside_a_group_is_answered_as_one_call_would_be(
    gateway_pool: asyncpg.Pool, admin_pool: asyncpg.Pool, make_workspace: Callable
) -> None:
    ws = await make_workspace("group-quota")
    token = await _token(admin_pool, ws)
    before = len(await _events(admin_pool, ws))
    quotas = [{"bucket": "writes", "limit": 2, "window_seconds": 60}]
    writer = GroupWriter(gateway_pool)

    results = await asyncio.gather(
        *(writer.submit(**_call(ws, token, _append(i), quotas=quotas)) for i in range(4))
    )

    assert [r.allowed for r in results] == [True, True, False, False]
    assert results[2].code == "rate_limited" and results[2].limit == 2
    assert results[2].event_id is not None  # the first call over the limit chains its denial
    assert results[3].result is None  # later ones are logged only
    rows = await _events(admin_pool, ws)
    assert [r["event_type"] for r in rows[before:]] == [
        "kora.group.appended",
        "kora.group.appended",
        "gateway.write.denied",
    ]


WRITES_COUNT_SQL = """
SELECT coalesce(sum(calls), 0) FROM isokron.quota_windows
WHERE workspace_id = $1 AND bucket = $2
"""


async def _counted(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace, bucket: str) -> int:
    async with (
        admin_pool.acquire() as conn,
        connection.workspace_transaction(conn, ws.workspace_id),
    ):
        return int(await conn.fetchval(WRITES_COUNT_SQL, ws.workspace_id, bucket))


async def test_one_agents_group_is_counted_once_and_a_failed_call_gives_its_unit_back(
    gateway_pool: asyncpg.Pool, admin_pool: asyncpg.Pool, make_workspace: Callable
) -> None:
    """One token's calls with one list of quotas are counted together (migration 0073): the
    budgets then hold exactly the calls that were performed, as when each call was counted
    in its own subtransaction."""
    ws = await make_workspace("group-count")
    token = await _token(admin_pool, ws)
    quotas = [
        {"bucket": "writes", "limit": 1_000, "window_seconds": 60},
        {"bucket": "burst", "limit": 1_000, "window_seconds": 3600},
    ]
    writer = GroupWriter(gateway_pool)
    bad = {"event_type": "Not Dotted", "payload": {}}

    outcomes = await asyncio.gather(
        *(
            writer.submit(**_call(ws, token, bad if i in (1, 4) else _append(i), quotas=quotas))
            for i in range(6)
        ),
        return_exceptions=True,
    )

    assert writer.stats.sizes == {6: 1}
    assert [isinstance(o, RefusalError) for o in outcomes] == [i in (1, 4) for i in range(6)]
    assert all(o.allowed for o in outcomes if isinstance(o, writes.Submitted))
    assert await _counted(admin_pool, ws, "writes") == 4
    assert await _counted(admin_pool, ws, "burst") == 4

    # A group that does not fit is counted call by call: the first two fit, the rest do not.
    tight = [{"bucket": "writes", "limit": 6, "window_seconds": 60}]
    more = await asyncio.gather(
        *(writer.submit(**_call(ws, token, _append(10 + i), quotas=tight)) for i in range(4))
    )
    assert [m.allowed for m in more] == [True, True, False, False]
    assert more[2].code == "rate_limited" and more[2].limit == 6
    assert await _counted(admin_pool, ws, "writes") == 8  # refused calls count in writes


async def test_idempotent_replay_inside_one_group(
    gateway_pool: asyncpg.Pool, admin_pool: asyncpg.Pool, make_workspace: Callable
) -> None:
    ws = await make_workspace("group-idem")
    token = await _token(admin_pool, ws)
    before = len(await _events(admin_pool, ws))
    writer = GroupWriter(gateway_pool)

    first, again, other = await asyncio.gather(
        writer.submit(**_call(ws, token, _append(7), key="k-1")),
        writer.submit(**_call(ws, token, _append(7), key="k-1")),
        writer.submit(**_call(ws, token, _append(8), key="k-1")),
        return_exceptions=True,
    )

    assert writer.stats.sizes == {3: 1}
    assert isinstance(first, writes.Submitted) and isinstance(again, writes.Submitted)
    assert first.result is not None and again.result is not None
    assert first.result["replayed"] is False and again.result["replayed"] is True
    assert again.event_id == first.event_id
    assert isinstance(other, ConflictError) and other.sqlstate == "IKC02"
    assert len(await _events(admin_pool, ws)) == before + 1


async def test_groups_never_mix_workspaces(
    gateway_pool: asyncpg.Pool, admin_pool: asyncpg.Pool, make_workspace: Callable
) -> None:
    a, b = await make_workspace("group-a"), await make_workspace("group-b")
    tokens = {
        a.workspace_id: await _token(admin_pool, a),
        b.workspace_id: await _token(admin_pool, b),
    }
    owner = {t: ws for ws, t in tokens.items()}
    seen: list[tuple[str, set[str]]] = []

    class Recording(GroupWriter):
        async def _run(self, workspace_id: str, group: list[Any]) -> None:
            seen.append((workspace_id, {owner[p.submission.token_sha256] for p in group}))
            await super()._run(workspace_id, group)

    writer = Recording(gateway_pool)
    await asyncio.gather(
        *(
            writer.submit(**_call(ws, tokens[ws.workspace_id], _append(i)))
            for i in range(12)
            for ws in (a, b)
        )
    )
    assert sorted(w for w, _ in seen) == sorted([a.workspace_id, b.workspace_id])
    assert all(members == {w} for w, members in seen)

    # The database refuses a token of another workspace in a group (by itself, not the others).
    items = [
        writes.Submission(
            tokens[a.workspace_id], UNLIMITED, "append_event", _append(1), None, DENIAL
        ),
        writes.Submission(
            tokens[b.workspace_id], UNLIMITED, "append_event", _append(2), None, DENIAL
        ),
    ]
    ok, foreign = await writes.submit_group(gateway_pool, a.workspace_id, items)
    assert isinstance(ok, writes.Submitted) and ok.allowed
    assert isinstance(foreign, RefusalError) and foreign.code == "workspace_mismatch"


async def test_a_group_whose_commit_fails_answers_every_caller_with_an_error_and_keeps_nothing(
    gateway_pool: asyncpg.Pool, admin_pool: asyncpg.Pool, make_workspace: Callable
) -> None:
    ws = await make_workspace("group-commit")
    token = await _token(admin_pool, ws)
    before = len(await _events(admin_pool, ws))
    writer = GroupWriter(gateway_pool)
    await admin_pool.execute(FAIL_AT_COMMIT_SQL)
    try:
        outcomes = await asyncio.gather(
            writer.submit(**_call(ws, token, _append(1))),
            writer.submit(**_call(ws, token, _append(2, fail_at_commit="yes"))),
            writer.submit(**_call(ws, token, _append(3))),
            return_exceptions=True,
        )
    finally:
        await admin_pool.execute(DROP_FAIL_AT_COMMIT_SQL)

    assert writer.stats.sizes == {3: 1}
    assert all(isinstance(o, SubstrateError) and o.sqlstate == "P0001" for o in outcomes), outcomes
    assert len(await _events(admin_pool, ws)) == before


async def test_a_cancelled_caller_does_not_cancel_its_group(
    gateway_pool: asyncpg.Pool, admin_pool: asyncpg.Pool, make_workspace: Callable
) -> None:
    ws = await make_workspace("group-cancel")
    token = await _token(admin_pool, ws)
    before = len(await _events(admin_pool, ws))
    writer = GroupWriter(gateway_pool)
    tasks = [asyncio.create_task(writer.submit(**_call(ws, token, _append(i)))) for i in range(4)]
    await asyncio.sleep(0)  # every call is queued; the group has not run yet
    tasks[1].cancel()

    done = await asyncio.gather(*tasks, return_exceptions=True)

    assert isinstance(done[1], asyncio.CancelledError)
    assert all(isinstance(d, writes.Submitted) for i, d in enumerate(done) if i != 1)
    assert writer.stats.sizes == {4: 1}
    rows = await _events(admin_pool, ws)
    assert sorted(r["payload"]["n"] for r in rows[before:]) == [0, 1, 2, 3]
