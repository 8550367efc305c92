"""Progress through a verification's row and state checks (the longest part of a verify):
each phase is reported where it starts and as it goes, counts only grow within a phase, and
the last count of the state rows is the number of rows checked, from the database and from an
export on one process or on every CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from isokron.chain import bundle_parallel, bundle_v3, state, verify_bundle
from isokron.substrate import audit, writes
from isokron.substrate.dsn import SubstrateDSNs

ENTRIES = 7


@pytest.fixture
async def ws(
    make_workspace: Callable, admin_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> writes.CreatedWorkspace:
    """A seeded workspace with a few scratchpad entries; progress reported every 2 rows."""
    created = await make_workspace("progress")
    for i in range(ENTRIES):
        await writes.write(
            admin_pool,
            "write_scratchpad_entry",
            created.workspace_id,
            created.actors["kora"],
            writes.scratchpad_args(kind="observation", summary=f"entry {i}", content=f"c{i}"),
        )
    monkeypatch.setattr(state, "ROW_PROGRESS_EVERY", 2)
    monkeypatch.setattr(audit, "ROW_PROGRESS_EVERY", 2)
    monkeypatch.setattr(bundle_v3, "PROGRESS_EVERY", 2)
    return created


def _phases(seen: list[tuple[str, int]]) -> list[str]:
    """The phases in the order they were first reported; counts only grow within each."""
    order: list[str] = []
    last: dict[str, int] = {}
    for phase, n in seen:
        if phase not in last:
            order.append(phase)
            assert n == 0, f"{phase} starts at {n}, not 0"
        assert n >= last.get(phase, 0), f"{phase} went back from {last[phase]} to {n}"
        last[phase] = n
    return order


def test_verify_reports_each_phase_of_the_row_checks(
    ws: writes.CreatedWorkspace, substrate: SubstrateDSNs
) -> None:
    seen: list[tuple[str, int]] = []
    result = audit.verify_workspace(
        substrate.admin, ws.workspace_id, row_progress=lambda p, n: seen.append((p, n))
    )
    assert result.ok
    assert _phases(seen) == ["scratchpad", "records", "rows"]
    final = {phase: n for phase, n in seen}
    assert final["rows"] == result.rows_checked > ENTRIES
    assert final["scratchpad"] >= ENTRIES - 1 and final["records"] > ENTRIES - 2
    assert len([p for p, _ in seen if p == "rows"]) > 3  # as it goes, not only at the end
    print(f"\n  {len(seen)} progress reports: {final}")


@pytest.mark.parametrize("cpus", [1, 2])
def test_verify_bundle_reports_the_state_check(
    ws: writes.CreatedWorkspace,
    substrate: SubstrateDSNs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cpus: int,
) -> None:
    path = tmp_path / "b.jsonl"
    header = audit.export_workspace(substrate.admin, ws.workspace_id, path)
    monkeypatch.setattr(bundle_parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(bundle_parallel, "workers", lambda: cpus)
    seen: list[tuple[str, int]] = []
    report = verify_bundle(path, row_progress=lambda p, n: seen.append((p, n)))
    assert report.ok
    # On every CPU the state check reads the file a second time ("records"); on one process
    # the records are read during the chain walk, which reports events.
    assert _phases(seen) == (["records", "rows"] if cpus > 1 else ["rows"])
    final = {phase: n for phase, n in seen}
    assert final["rows"] == header.state_rows > ENTRIES
    if cpus > 1:
        assert final["records"] == report.events_checked - report.events_checked % 2
    print(f"\n  {cpus} CPU(s): {len(seen)} progress reports: {final}")

