"""Fill a workspace fast, through the substrate's own write operation.

Items are written with ``writes.WRITE_WITH_TOKEN_SQL`` — the statement the gateway role runs,
presenting the SHA-256 of the writer's token — pipelined
with asyncpg's ``executemany`` in batches, with ``synchronous_commit`` off for the loading
connection only. Every item is a real, chained write (one event each); only the loading is
faster than one round trip per write. Nothing loaded this way is timed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from isokron.governance.vocabulary import SCRATCHPAD_KINDS
from isokron.substrate import writes

BATCH = 500
SENTENCE = (
    "Observed that the nightly export of workspace {i} finished after the retention job; "
    "the runbook says retention must run last, so the order was swapped and noted for review."
)


def scratchpad_item(i: int) -> dict[str, Any]:
    """Arguments of a typical scratchpad entry (about 300 bytes of content)."""
    content = SENTENCE.format(i=i) + f" Item {i}: follow up with the operator tomorrow."
    return writes.scratchpad_args(
        kind=SCRATCHPAD_KINDS[i % len(SCRATCHPAD_KINDS)],
        summary=f"export order fix #{i}",
        content=content,
        visibility_scope="cross_agent_dereferenceable" if i % 4 == 0 else "own_only",
        session_id=f"bench-session-{i // 100}",
    )


def node_item(i: int) -> dict[str, Any]:
    """Arguments of a typical iso node."""
    return {
        "node_type": "decision",
        "title": f"Run retention after export (#{i})",
        "content": SENTENCE.format(i=i),
        "properties": {"source": "bench", "n": i},
    }


def event_item(i: int) -> dict[str, Any]:
    """Arguments of a typical ``append_event``."""
    return {
        "event_type": "kora.note.recorded",
        "payload": {"note": SENTENCE.format(i=i), "n": i},
    }


async def preload(
    pool: asyncpg.Pool,
    workspace_id: str,
    token: str,
    op: str,
    make_args: Callable[[int], dict[str, Any]],
    count: int,
    *,
    start: int = 0,
) -> int:
    """Write ``count`` items made by ``make_args(start..start+count-1)`` as the holder of
    ``token``; returns ``count``."""
    digest = writes.token_sha256(token)
    async with pool.acquire() as conn:
        await conn.execute("SET synchronous_commit = off")
        try:
            for lo in range(start, start + count, BATCH):
                hi = min(lo + BATCH, start + count)
                await conn.executemany(
                    writes.WRITE_WITH_TOKEN_SQL,
                    [(digest, op, make_args(i), None, workspace_id) for i in range(lo, hi)],
                )
        finally:
            await conn.execute("RESET synchronous_commit")
    return count
