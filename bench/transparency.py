"""Transparency-log cost: tree maintenance beside appends, and inclusion proofs at 1M leaves.

``python -m bench.transparency [--dsn ADMIN_DSN] [--appends N] [--leaves N]``

1. Maintenance. N events are appended one at a time through ``writes.write("append_event")``
   (the baseline: append throughput), then ``transparency.catch_up`` brings the Merkle tree
   up to date with them. Reported: catch-up time per event as a share of append time per event
   (floor: <= 10 %). Slices alternate (append a slice, catch it up) so that other load on the
   machine hits both alike.
2. Proofs. A tree of ``--leaves`` leaves (default 1,000,000; synthetic leaf hashes, since
   proof cost depends only on the stored nodes) is written with the same node layout, then
   ``transparency.prove_inclusion`` (one indexed query for the O(log n) nodes + the path) runs
   for random leaves. Reported: median and p99 in ms (floor: <= 5 ms at 1M).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import time

import asyncpg

from bench.substrate import bench_database, create_bench_workspace
from isokron.chain import merkle
from isokron.substrate import transparency, writes

SLICE = 250


async def _maintenance(admin: str, appends: int) -> tuple[float, float]:
    conn = await asyncpg.connect(admin)
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=_loads, schema="pg_catalog")
    ws = await create_bench_workspace(conn, "tlog")
    await transparency.catch_up(conn, ws.workspace_id)
    append_s = catch_s = 0.0
    done = 0
    while done < appends:
        n = min(SLICE, appends - done)
        t0 = time.perf_counter()
        for i in range(n):
            await writes.write(
                conn, "append_event", ws.workspace_id, ws.kora_id,
                {"event_type": "kora.note.recorded", "payload": {"i": done + i}},
            )  # fmt: skip
        t1 = time.perf_counter()
        await transparency.catch_up(conn, ws.workspace_id)
        t2 = time.perf_counter()
        append_s += t1 - t0
        catch_s += t2 - t1
        done += n
    await conn.close()
    return append_s / appends, catch_s / appends


def _dumps(value: object) -> str:
    import json

    return json.dumps(value)


def _loads(text: str) -> object:
    import json

    return json.loads(text)


async def _proofs(admin: str, leaves: int, samples: int) -> tuple[float, float, int]:
    conn = await asyncpg.connect(admin)
    ws = f"tlog-proof-{random.getrandbits(32):08x}"
    tree = merkle.CompactRange()
    batch: list[merkle.Node] = []
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        for i in range(leaves):
            batch += tree.append(merkle.leaf_hash(hashlib.sha256(i.to_bytes(8, "big")).digest()))
            if len(batch) >= 100_000 or i == leaves - 1:
                await conn.execute(
                    transparency.INSERT_NODES_SQL, ws,
                    [n.level for n in batch], [n.index for n in batch], [n.hash for n in batch],
                )  # fmt: skip
                batch = []
    await conn.execute("ANALYZE hivex_foundation.merkle_node")
    checkpoint = transparency.StoredCheckpoint(leaves, tree.root(), "(not signed in the bench)")
    times = []
    rng = random.Random(7)
    for _ in range(samples):
        seq = rng.randint(1, leaves)
        t0 = time.perf_counter()
        proof = await transparency.prove_inclusion(conn, ws, seq, checkpoint)
        times.append((time.perf_counter() - t0) * 1000)
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        merkle.verify_inclusion(
            seq - 1, leaves, bytes.fromhex(proof["leaf_hash"]), path, tree.root()
        )
    await conn.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1], len(proof["audit_path"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=None, help="admin DSN of a server (default: embedded)")
    parser.add_argument("--appends", type=int, default=3000)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    with bench_database(args.dsn) as db:
        per_append, per_catch = asyncio.run(_maintenance(db.dsns.admin, args.appends))
        print(f"[transparency] PostgreSQL {db.server_version}")
        print(f"  append_event, one at a time     {per_append * 1e6:9.1f} us/event "
              f"({1 / per_append:,.0f} events/s)")  # fmt: skip
        print(f"  tree catch-up                   {per_catch * 1e6:9.1f} us/event")
        print(f"  maintenance / append            {per_catch / per_append * 100:9.2f} %  "
              "(floor <= 10 %)")  # fmt: skip
        t0 = time.perf_counter()
        median, p99, depth = asyncio.run(_proofs(db.dsns.admin, args.leaves, args.samples))
        print(f"  tree of {args.leaves:,} leaves written in {time.perf_counter() - t0:.1f} s")
        print(f"  inclusion proof at {args.leaves:,}     median {median:.3f} ms, "
              f"p99 {p99:.3f} ms, path {depth} hashes  (floor <= 5 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
