"""The gateway's proof tools through the official MCP client (stdio and HTTP): capability
checked like every tool, answering against checkpoints the operator signed, and the answers
verify offline with nothing but the log's verifier key."""

from __future__ import annotations

import asyncpg
import pytest
from gateway_harness import Gateways, Tenant, data_of, error_of, make_tenant

from isokron.chain.note import Signer
from isokron.chain.tlog import verify_proof_document
from isokron.substrate import transparency, writes


@pytest.fixture(scope="module")
async def tenant(gateways: Gateways, admin_pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(admin_pool, f"proofs-{gateways.transport}")


async def _append(admin_pool: asyncpg.Pool, tenant: Tenant, n: int) -> None:
    async with admin_pool.acquire() as conn:
        for i in range(n):
            await writes.write(
                conn, "append_event", tenant.workspace_id, tenant.actors["kora"],
                {"event_type": "kora.note.recorded", "payload": {"i": i}},
            )  # fmt: skip


async def test_proofs_are_capability_checked_and_verify_offline(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    operator = await gateways.session(tenant.operator_token)
    kora = await gateways.session(tenant.kora_token)
    # No signed checkpoint yet: a clean refusal, not a crash.
    refused = error_of(await operator.call("kora__prove_event_inclusion", {"seq": 1}))
    assert refused["code"] == "not_found" and "isokron checkpoint" in refused["message"]

    async with admin_pool.acquire() as conn:
        origin = await transparency.origin_of(conn, tenant.workspace_id)
        signer = Signer.generate(origin)
        await transparency.register_key(conn, tenant.workspace_id, signer.verifier())
        first = await transparency.sign_tree(conn, tenant.workspace_id, signer)
    await _append(admin_pool, tenant, 3)
    async with admin_pool.acquire() as conn:
        second = await transparency.sign_tree(conn, tenant.workspace_id, signer)
    key = signer.verifier()

    # Kora lacks cap_verify_chain: refused like any tool without its capability.
    denied = error_of(await kora.call("kora__prove_event_inclusion", {"seq": 1}))
    assert denied["code"] == "capability_denied"

    proof = data_of(await operator.call("kora__prove_event_inclusion", {"seq": 2}))
    assert proof["tree_size"] == second.tree_size and proof["leaf_index"] == 1
    assert "inclusion verified" in verify_proof_document(proof, key)

    consistency = data_of(
        await operator.call("kora__prove_log_consistency", {"first": first.tree_size})
    )
    assert (consistency["first"], consistency["second"]) == (first.tree_size, second.tree_size)
    assert "consistency verified" in verify_proof_document(consistency, key)

    beyond = error_of(await operator.call("kora__prove_event_inclusion", {"seq": 10_000}))
    assert beyond["code"] == "not_found"
    unsigned = error_of(await operator.call("kora__prove_log_consistency", {"first": 2}))
    assert unsigned["code"] == "not_found"
