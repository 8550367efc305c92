"""The gateway in process, against the real substrate: governance snapshots and token lookups
are served for at most their TTL (a test clock stands in for time, not for the database), and a
database that went away is reported as such.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from gateway_harness import govern, issue, make_tenant, set_policy

from isokron.errors import RefusalError
from isokron.gateway import Gateway, Screening, screen
from isokron.gateway.auth import Authenticator, Principal
from isokron.gateway.governance import GovernanceCache
from isokron.gateway.server import health_response
from isokron.substrate.connection import create_pool
from isokron.substrate.dsn import SubstrateDSNs


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
async def gateway_pool(substrate: SubstrateDSNs) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(substrate.gateway, max_size=4)
    yield pool
    await pool.close()


async def test_governance_is_served_from_memory_for_its_ttl(
    reader_pool: asyncpg.Pool, admin_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(admin_pool, "cache")
    clock = Clock()
    cache = GovernanceCache(reader_pool, ttl=1.0, clock=clock)
    first = await cache.get(tenant.workspace_id, "kora")
    assert not first.stopped
    assert first.rate_limit_per_minute == 60
    assert first.capabilities.has("cap_append_event")
    assert first.constitution_revision == 1

    await set_policy(admin_pool, tenant, "policy.kora_disabled", True)
    assert await cache.get(tenant.workspace_id, "kora") is first
    clock.now += 1.001
    second = await cache.get(tenant.workspace_id, "kora")
    assert second.stopped
    assert second.constitution is first.constitution  # same revision: not recompiled

    await govern(admin_pool, tenant, "revise_constitution", {"rules": {"version": 1, "rules": []}})
    clock.now += 1.001
    third = await cache.get(tenant.workspace_id, "kora")
    assert third.constitution_revision == 2
    assert third.constitution is not first.constitution
    # Each actor kind has its own snapshot (its own row of the capability matrix).
    operator = await cache.get(tenant.workspace_id, "operator")
    assert operator.capabilities.has("cap_decide_proposal")
    assert not third.capabilities.has("cap_decide_proposal")


async def test_concurrent_misses_share_one_load(
    reader_pool: asyncpg.Pool, admin_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(admin_pool, "flight")
    cache = GovernanceCache(reader_pool, ttl=30.0, clock=Clock())
    snapshots = await asyncio.gather(*(cache.get(tenant.workspace_id, "kora") for _ in range(20)))
    assert all(s is snapshots[0] for s in snapshots)


async def test_ttl_zero_reads_the_substrate_every_time(
    reader_pool: asyncpg.Pool, admin_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(admin_pool, "fresh")
    cache = GovernanceCache(reader_pool, ttl=0.0, clock=Clock())
    assert not (await cache.get(tenant.workspace_id, "kora")).stopped
    await set_policy(admin_pool, tenant, "policy.kora_disabled", True)
    assert (await cache.get(tenant.workspace_id, "kora")).stopped


async def test_a_constitution_that_does_not_compile_fails_closed(
    reader_pool: asyncpg.Pool, admin_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(admin_pool, "badrules")
    broken = {
        "version": 1,
        "rules": [{"id": "bad", "effect": "deny", "match": {"content_pattern": "("}}],
    }
    await govern(admin_pool, tenant, "revise_constitution", {"rules": broken})
    governance = await GovernanceCache(reader_pool, ttl=0.0).get(tenant.workspace_id, "kora")
    assert governance.constitution is None
    assert governance.constitution_problem and "does not compile" in governance.constitution_problem
    principal = Principal(tenant.workspace_id, str(tenant.actors["kora"]), "kora", "t", "wsk_x")
    call = Screening(
        tool="iso_node_create",
        capability="cap_iso_node_create",
        writes=True,
        arguments={"node_type": "fact", "title": "t"},
        event_type="kora.node.created",
    )
    verdict = screen(principal, governance, call)
    assert verdict.code == "constitution_denied"
    assert "does not compile" in verdict.message


async def test_token_lookups_are_cached_for_their_ttl(
    gateway_pool: asyncpg.Pool, admin_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(admin_pool, "authcache")
    issued = await issue(admin_pool, tenant, "kora")
    clock = Clock()
    authenticator = Authenticator(gateway_pool, ttl=1.0, clock=clock)
    principal = await authenticator.authenticate(issued.token)
    assert principal.workspace_id == tenant.workspace_id
    assert principal.actor_id == str(tenant.actors["kora"])
    assert principal.actor_kind == "kora"
    assert principal.token_prefix == issued.token_prefix

    await govern(admin_pool, tenant, "revoke_token", {"token_id": str(issued.token_id)})
    # Within the TTL the answer needs no database (the HTTP verifier then skips its timed task).
    assert authenticator.is_cached(issued.token)
    assert await authenticator.authenticate(issued.token) == principal
    clock.now += 1.001
    assert not authenticator.is_cached(issued.token)
    with pytest.raises(RefusalError) as refused:
        await authenticator.authenticate(issued.token)
    assert refused.value.code == "unauthenticated" and "revoked" in refused.value.message


async def test_a_cached_token_is_never_served_past_its_expiry(
    gateway_pool: asyncpg.Pool, admin_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(admin_pool, "authexpiry")
    issued = await issue(admin_pool, tenant, "kora", expires_in=timedelta(seconds=1))
    clock = Clock()
    authenticator = Authenticator(gateway_pool, ttl=60.0, clock=clock)
    await authenticator.authenticate(issued.token)
    # The cache entry lives at most until the token's own expiry, not the 60 s TTL.
    await asyncio.sleep(1.2)
    clock.now += 1.2
    with pytest.raises(RefusalError) as refused:
        await authenticator.authenticate(issued.token)
    assert refused.value.code == "unauthenticated" and "expired" in refused.value.message


async def test_malformed_tokens_never_reach_the_database(substrate: SubstrateDSNs) -> None:
    pool = await create_pool(substrate.gateway, max_size=1)
    await pool.close()  # any query now fails: a refusal proves no query was made
    authenticator = Authenticator(pool, ttl=0.0)
    for token in (None, "", "wsk_short", "Bearer wsk_x", "wsk_" + "!" * 40):
        assert authenticator.is_cached(token)  # answered without the database
        with pytest.raises(RefusalError) as refused:
            await authenticator.authenticate(token)
        assert refused.value.code == "unauthenticated"


async def test_a_database_that_went_away_is_unavailable_not_a_refusal(
    substrate: SubstrateDSNs, reader_pool: asyncpg.Pool, admin_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(admin_pool, "gone")
    gone = await create_pool(substrate.gateway, max_size=1)
    await gone.close()
    gateway = Gateway(
        reader_pool=reader_pool,
        gateway_pool=gone,
        transport="stdio",
        governance_ttl=0.0,
        stdio_token=tenant.kora_token,
    )
    result = await gateway.call("kora__append_event", None, {"event_type": "kora.note.recorded"})
    assert result.is_error
    assert result.structured_content == {
        "error": {
            "code": "unavailable",
            "message": "The memory substrate could not be reached; try again shortly.",
            "retry_after_seconds": 1,
        }
    }
    # The reader role's pool gone instead: the same answer.
    reader_gone = await create_pool(substrate.reader, max_size=1)
    await reader_gone.close()
    writer = await create_pool(substrate.gateway, max_size=1)
    try:
        other = Gateway(
            reader_pool=reader_gone,
            gateway_pool=writer,
            transport="stdio",
            governance_ttl=0.0,
            stdio_token=tenant.kora_token,
        )
        again = await other.call("iso_node_search", None, {})
        assert again.structured_content is not None
        assert again.structured_content["error"]["code"] == "unavailable"
    finally:
        await writer.close()
    health = await health_response(gateway)
    assert health.status_code == 503
    assert json.loads(bytes(health.body)) == {
        "status": "degraded",
        "database": "unreachable",
        "transport": "stdio",
        "version": "0.1.0",
    }
