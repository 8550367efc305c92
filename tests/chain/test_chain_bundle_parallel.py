"""The parallel chain check of version-3 bundles (docs/chain.md §6): a chain is only proved
when every range passes and the ranges join; any tampering makes it fall back to the
sequential walk, whose findings are then the report's; a file changed between the chain check
and the state check, or replaced at its path, is never accepted on the first reading."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_chain_bundle import TENANT, bundle_chain
from test_chain_bundle_v3 import TAMPERS, _write

from isokron.chain import ChainRecord, bundle_parallel, range_worker, verify_bundle
from isokron.chain.bundle_parallel import ChainHead
from isokron.errors import ChainError

# Tamperings the fast checks accept as they are (the sequential walk finds nothing either).
CLEAN = {"untouched", "erased-payload"}


def state_chain(n: int) -> list[ChainRecord]:
    """A chain whose every payload mentions ``state`` (so the state check reads every line)."""
    return bundle_chain(n, payload=lambda seq: f'{{"n": {seq + 10}, "state": {{}}}}')


class Spy:
    """Records what each parallel check returned (None: it fell back to the sequential walk)."""

    def __init__(self) -> None:
        self.results: list[ChainHead | None] = []


@pytest.fixture
def parallel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    """Every bundle checked in parallel, in ranges of a few lines each."""
    spy, original = Spy(), bundle_parallel.check_in_parallel

    def recording(*args: Any, **kwargs: Any) -> ChainHead | None:
        head = original(*args, **kwargs)
        spy.results.append(head)
        return head

    monkeypatch.setattr(bundle_parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(bundle_parallel, "CHUNK_BYTES", 300)
    monkeypatch.setattr(bundle_parallel, "workers", lambda: 2)
    monkeypatch.setattr(bundle_parallel, "check_in_parallel", recording)
    yield spy


def _sequential(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    with monkeypatch.context() as m:
        m.setattr(bundle_parallel, "PARALLEL_MIN_BYTES", 1 << 62)
        return verify_bundle(path).to_dict()


@pytest.mark.parametrize("case", list(TAMPERS))
def test_parallel_reports_what_the_sequential_walk_reports(
    tmp_path: Path, case: str, parallel: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    tamper, kinds = TAMPERS[case]
    path = tmp_path / "b.jsonl"
    _write(path, tamper(bundle_chain(40)), 3)
    report = verify_bundle(path).to_dict()
    assert len(parallel.results) == 1
    proved = parallel.results[0] is not None
    assert report == _sequential(path, monkeypatch)
    assert proved == (case in CLEAN), "only an intact chain is proved in parallel"
    found = {p["kind"] for p in report["problems"]}
    assert kinds <= found and report["ok"] == (not found)
    print(f"{case}: {'proved in parallel' if proved else 'fell back'}, findings {sorted(found)}")


def test_a_long_chain_is_proved_in_many_ranges(tmp_path: Path, parallel: Spy) -> None:
    path = tmp_path / "b.jsonl"
    chain = bundle_chain(300)
    _write(path, chain, 3)
    seen: list[int] = []
    report = verify_bundle(path, progress=seen.append)
    head = parallel.results[0]
    assert head is not None and report.ok
    assert (head.count, head.head_seq, head.head_hash) == (300, 300, chain[-1].this_event_hash)
    assert seen == sorted(seen) and seen[-1] == 300 and len(seen) > 10


def test_ranges_start_at_line_starts(tmp_path: Path) -> None:
    path = tmp_path / "lines"
    path.write_bytes(b"".join(b"x" * (i % 7) + b"\n" for i in range(200)))
    size = path.stat().st_size
    for chunk in (1, 2, 5, 33, size, 10 * size):
        ranges = bundle_parallel.split_ranges(str(path), 0, size, chunk)
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        data = path.read_bytes()
        for lo, hi in ranges:
            assert lo < hi and (lo == 0 or data[lo - 1 : lo] == b"\n")
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_a_line_changed_after_the_chain_check_is_refused(
    tmp_path: Path, parallel: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state check reads the state-carrying lines again: they must hash as proved."""
    path = tmp_path / "b.jsonl"
    _write(path, state_chain(400), 3)  # the line edited lies beyond what is buffered
    proved = bundle_parallel.check_in_parallel

    def then_edit(*args: Any, **kwargs: Any) -> ChainHead | None:
        head = proved(*args, **kwargs)
        assert head is not None
        data = path.read_bytes()
        offset = data.index(b'"n": 397,')  # same length: offsets stay valid
        path.write_bytes(data[:offset] + b'"n": 793,' + data[offset + 9 :])
        return head

    monkeypatch.setattr(bundle_parallel, "check_in_parallel", then_edit)
    with pytest.raises(ChainError, match="changed while the bundle was being verified"):
        verify_bundle(path)


def test_a_file_replaced_at_its_path_is_not_read_by_the_workers(
    tmp_path: Path, parallel: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers open the path: if another file is there now (a valid chain, even), they
    refuse it, and the sequential walk reads the file the verifier opened."""
    path, other = tmp_path / "b.jsonl", tmp_path / "other.jsonl"
    _write(path, TAMPERS["edited-payload"][0](bundle_chain(40)), 3)
    _write(other, bundle_chain(40), 3)
    proved = bundle_parallel.check_in_parallel

    def after_swap(*args: Any, **kwargs: Any) -> ChainHead | None:
        os.replace(other, path)
        return proved(*args, **kwargs)

    monkeypatch.setattr(bundle_parallel, "check_in_parallel", after_swap)
    report = verify_bundle(path)
    assert not report.ok and {p.kind for p in report.problems} == {"payload_mismatch"}


def test_streams_small_files_and_checkpoints_walk_sequentially(
    tmp_path: Path, parallel: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from isokron.chain import Checkpoint

    path = tmp_path / "b.jsonl"
    chain = bundle_chain(40)
    _write(path, chain, 3)
    with path.open("rb") as fh:
        assert verify_bundle(fh).ok  # an open file with a name: parallel
    assert parallel.results and parallel.results[-1] is not None
    parallel.results.clear()
    assert verify_bundle(path, [Checkpoint(TENANT, 9, chain[8].this_event_hash)]).ok
    with path.open("r", encoding="utf-8") as text:
        assert verify_bundle(text).ok
    monkeypatch.setattr(bundle_parallel, "PARALLEL_MIN_BYTES", path.stat().st_size)
    assert verify_bundle(path).ok
    assert parallel.results == []


def test_a_compressed_file_object_is_walked_as_it_reads(tmp_path: Path, parallel: Spy) -> None:
    """A GzipFile has the path as its name: the workers would read the compressed bytes, not
    what the verifier reads. Only a plain OS file is cut into ranges."""
    import gzip

    path = tmp_path / "b.jsonl"
    _write(path, TAMPERS["edited-payload"][0](bundle_chain(40)), 3)
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    with gzip.open(packed, "rb") as fh:
        report = verify_bundle(fh)
    assert parallel.results == []
    assert {p.kind for p in report.problems} == {"payload_mismatch"}


def test_unchecked_payloads_give_the_sequential_report(
    tmp_path: Path, parallel: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_payloads=False: an event that carries state with a payload that is not its
    digest's passes the chain check on both paths, and the state check does not re-check it."""
    import dataclasses

    chain = state_chain(40)
    chain[9] = dataclasses.replace(chain[9], payload_text='{"n": 0, "state": {}}')
    path = tmp_path / "b.jsonl"
    _write(path, chain, 3)
    report = verify_bundle(path, check_payloads=False).to_dict()
    assert parallel.results and parallel.results[-1] is not None
    with monkeypatch.context() as m:
        m.setattr(bundle_parallel, "PARALLEL_MIN_BYTES", 1 << 62)
        assert report == verify_bundle(path, check_payloads=False).to_dict()
    assert report["ok"]


def test_a_state_line_broken_after_the_chain_check_is_a_clean_error(
    tmp_path: Path, parallel: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.jsonl"
    _write(path, state_chain(400), 3)
    proved = bundle_parallel.check_in_parallel

    def then_break(*args: Any, **kwargs: Any) -> ChainHead | None:
        head = proved(*args, **kwargs)
        data = path.read_bytes()
        cut = data.index(b"\n", len(data) // 2) + 1  # an event line far past the buffer
        path.write_bytes(data[:cut] + b"zz" + data[cut + 2 :])  # not hex any more
        return head

    monkeypatch.setattr(bundle_parallel, "check_in_parallel", then_break)
    with pytest.raises(ChainError, match="changed while the bundle was being verified"):
        verify_bundle(path)


def test_workers_are_plain_processes_whatever_the_caller_runs(
    tmp_path: Path, parallel: Spy
) -> None:
    """With another thread in the caller (fork would be unsafe) the chain is still proved in
    parallel: the workers are new interpreters that import only IsoKron's chain package."""
    import threading

    path = tmp_path / "b.jsonl"
    _write(path, bundle_chain(60), 3)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert verify_bundle(path).ok
        assert len(parallel.results) == 1 and parallel.results[0] is not None
    finally:
        stop.set()
        other.join()


@pytest.mark.parametrize("worker", ["/bin/false", "/bin/echo"])
def test_a_worker_that_fails_makes_the_walk_sequential(
    tmp_path: Path,
    parallel: Spy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    worker: str,
) -> None:
    """A worker that dies at once, or answers something else than a result: the file is
    walked on one process, with a warning, and gets its findings."""
    path = tmp_path / "b.jsonl"
    _write(path, TAMPERS["edited-payload"][0](bundle_chain(40)), 3)
    monkeypatch.setattr(bundle_parallel, "WORKER_COMMAND", [worker])
    report = verify_bundle(path)
    assert parallel.results == []  # the parallel check raised
    assert {p.kind for p in report.problems} == {"payload_mismatch"}
    assert "[isokron.chain.bundle.parallel] walking on one process" in caplog.text


def test_a_worker_result_round_trips_and_a_short_one_is_refused() -> None:
    """A range's result, with its state items in binary after the JSON line, reads back as it
    was written; a result cut short in its items is refused, not read as fewer items."""
    items = tuple((offset, bytes([offset % 256]) * 32) for offset in (0, 1_234, 1 << 40))
    result = range_worker.RangeCheck(True, 3, b"\x01" * 73, 9, b"\x02" * 32, 777, items)
    stream = io.BytesIO(range_worker.encode_result(result) * 2)
    assert range_worker.read_result(stream) == result
    assert range_worker.read_result(stream) == result
    assert range_worker.read_result(stream) is None
    cut = range_worker.encode_result(result)[:-1]
    with pytest.raises(ValueError, match="bytes of state items"):
        range_worker.read_result(io.BytesIO(cut))
