"""The landed releases upgrade in place (issue 12's migrations).

Two releases: migrations through 0044 (before issue 12), and through 0071 (the last landed
release: group appends and the one-statement reads, before 0072-0073). A database is built with
that release's migrations only and populated through its entry points: the owner's
``write_as``, and the gateway role's statement as that release's gateway sent it (0044:
``admit_write`` then ``isokron_api.write``; 0071: ``isokron_api.submit_group``, in groups, so
the quota windows hold counts made call by call). Upgrading applies the rest; then ``verify``
passes, group writes (one agent's calls counted together since 0073) and the one-statement
session context work on the old rows, and a version-3 export of the whole chain verifies
(bundles of versions 1 and 2 are read by tests/chain).
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from isokron.chain import verify_bundle
from isokron.governance.operations import quotas_for
from isokron.governance.seeds import default_seed
from isokron.substrate import audit, connection, reads, writes
from isokron.substrate.dsn import SubstrateDSNs
from isokron.substrate.group_writes import GroupWriter
from isokron.substrate.migrate import upgrade

RELEASES = ["0044.maintenance-isolates-workspaces", "0071.recall-in-one-statement"]
# What the 0044 release's gateway sent for one write (its writes.SUBMIT_SQL).
OLD_SUBMIT_SQL = """
WITH budget AS (SELECT isokron_api.admit_write($2::bytea, $3::jsonb) AS rate)
SELECT CASE WHEN (rate ->> 'allowed')::boolean
            THEN isokron_api.write($2::bytea, $4, $5::jsonb, $6, $1) END
FROM budget
"""
DENIAL = {"tool": "kora__append_event", "code": "rate_limited", "reason": "test"}


def _quotas(op: str, event_type: str | None = None) -> list[dict[str, Any]]:
    return [
        {"bucket": q.bucket, "limit": 1000, "window_seconds": q.window_seconds, "code": q.code}
        for q in quotas_for(op, event_type)
    ]


async def _populate(dsns: SubstrateDSNs, workspace_id: str, release: str) -> dict[str, Any]:
    admin = await connection.connect(dsns.admin)
    try:
        created = await writes.create_workspace(admin, workspace_id, seed=default_seed())
        issued = await writes.issue_token(
            admin, workspace_id, created.operator_actor_id, created.actors["kora"]
        )
    finally:
        await admin.close()
    digest = writes.token_sha256(issued.token)
    appends = [
        ("append_event", {"event_type": "kora.note.recorded", "payload": {"n": i}}, f"old-{i}")
        for i in range(5)
    ]
    scratchpad = writes.scratchpad_args(kind="observation", summary="old entry", content="before")
    calls = [*appends, ("write_scratchpad_entry", scratchpad, None)]
    gateway = await connection.connect(dsns.gateway)
    try:
        if release.startswith("0044"):
            for op, args, key in calls:
                quotas = _quotas(op, args.get("event_type"))
                assert await gateway.fetchval(
                    OLD_SUBMIT_SQL, workspace_id, digest, quotas, op, args, key
                )
        else:
            items = [
                writes.Submission(
                    digest, _quotas(op, args.get("event_type")), op, args, key, DENIAL
                )
                for op, args, key in calls
            ]
            for outcome in await writes.submit_group(gateway, workspace_id, items):
                assert isinstance(outcome, writes.Submitted) and outcome.allowed, outcome
    finally:
        await gateway.close()
    return {"token": issued.token}


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: r.split(".")[0])
def last_release(
    request: pytest.FixtureRequest, fresh_database: Callable[[], str]
) -> tuple[SubstrateDSNs, str, dict[str, Any]]:
    release = request.param
    dsn = fresh_database()
    upgrade(dsn, until=release)
    dsns = SubstrateDSNs.derive(dsn)
    ws = f"rel-{uuid4().hex[:8]}"
    info = asyncio.run(_populate(dsns, ws, release))
    applied = upgrade(dsn).applied
    number = int(release.split(".")[0])
    assert applied and all(int(m.split(".")[0]) > number for m in applied), applied
    return dsns, ws, info


def test_the_last_release_verifies_after_the_upgrade(
    last_release: tuple[SubstrateDSNs, str, dict[str, Any]],
) -> None:
    dsns, ws, _ = last_release
    report = audit.verify_workspace(dsns.admin, ws)
    assert report.ok, report.to_dict()
    assert report.chain.events_checked >= 5 + 6 + 1
    assert upgrade(dsns.admin).applied == ()


async def test_group_writes_and_the_one_statement_reads_work_on_the_old_rows(
    last_release: tuple[SubstrateDSNs, str, dict[str, Any]], tmp_path: Path
) -> None:
    dsns, ws, info = last_release
    pool = await connection.create_pool(dsns.gateway, min_size=1, max_size=4)
    try:
        writer = GroupWriter(pool)
        results = await asyncio.gather(
            *(
                writer.submit(
                    workspace_id=ws,
                    token_sha256=writes.token_sha256(info["token"]),
                    quotas=_quotas("append_event", "kora.note.recorded"),
                    op="append_event",
                    args={"event_type": "kora.note.recorded", "payload": {"after": i}},
                    idempotency_key=None,
                    over_limit_denial=DENIAL,
                )
                for i in range(6)
            )
        )
    finally:
        await pool.close()
    seqs = sorted(int(r.result["seq"]) for r in results if r.result)
    assert len(seqs) == 6 and seqs == list(range(seqs[0], seqs[0] + 6))
    reader = await connection.connect(dsns.reader)
    try:
        parts = await reads.read_session_parts(reader, ws)
    finally:
        await reader.close()
    assert [e.summary for e in parts.own_scratchpad] == ["old entry"]
    assert len(parts.policies) == 31
    report = audit.verify_workspace(dsns.admin, ws)
    assert report.ok, report.to_dict()
    bundle = tmp_path / "after.bundle"
    header = audit.export_workspace(dsns.admin, ws, bundle)
    assert json.loads(bundle.read_text(encoding="utf-8").splitlines()[0])["version"] == 3
    assert verify_bundle(bundle).ok and header.event_count == report.chain.events_checked
