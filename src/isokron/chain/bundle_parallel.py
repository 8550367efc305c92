"""The version-3 chain check of a large bundle file on one process per CPU.

A version-3 event line carries everything its checks need (docs/chain.md §6): its hash input,
its stored hash and its payload; the only thing it needs from the line before it is that
line's stored hash and seq. So the event lines can be cut into byte ranges, each checked on
its own process, and the ranges joined: the first line of each range must link to the last
line of the range before it (prev hash and seq), exactly as the sequential walk requires of
consecutive lines. Every range checks the fast path of :func:`isokron.chain.bundle_v3.
walk_v3_events` and nothing else; when any line fails it, or anything is unusual (a
malformed line, a checkpoint, a range that does not join), the caller runs the sequential
walk over the whole file instead, which names every problem. A clean chain is therefore
proved at the speed of all CPUs, and a damaged one is reported as before.

Only regular files are cut (a stream cannot be read twice), and only when they are at least
:data:`PARALLEL_MIN_BYTES` long: below that, starting the processes costs more than it saves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from isokron.chain import range_worker
from isokron.chain.hashing import GENESIS_HASH, HASH_PREFIX
from isokron.chain.range_worker import INT64, Job, RangeCheck, file_identity
from isokron.chain.state import ERASURE_EVENT

__all__ = [
    "CHUNK_BYTES",
    "PARALLEL_MIN_BYTES",
    "ChainHead",
    "WorkerError",
    "check_in_parallel",
    "file_identity",
    "file_identity_of",
    "split_ranges",
    "workers",
]

#: Files shorter than this are walked on one process (≈ 9,000 events of 1.1 kB).
PARALLEL_MIN_BYTES = 10 << 20
#: Bytes per range: small enough that the processes finish together (event lines differ in
#: length, so equal bytes are unequal work) and that progress comes often, large enough that
#: a range's set-up is noise (measured at 100 k events: 24 MB 0.37 s, 4 MB 0.31 s).
CHUNK_BYTES = 4 << 20
#: The worker's command: the interpreter in isolated mode without site-packages (the worker
#: needs only the standard library), running the worker's file by its path.
WORKER_COMMAND = [sys.executable, "-I", "-S", range_worker.__file__]


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A chain proved by :func:`check_in_parallel`: its length, head, and where it ends."""

    count: int
    head_seq: int
    head_hash: bytes
    #: File offset of the first event line.
    events_start: int
    #: (file offset, stored hash) of every event that carries state, in chain order: the
    #: state check reads these lines again and re-hashes them against the proved hashes.
    state_items: list[tuple[int, bytes]]


def workers() -> int:
    """Processes a parallel check uses: one per CPU."""
    return max(1, os.cpu_count() or 1)


def file_identity_of(path: str) -> tuple[int, int]:
    """(device, inode) of the file at ``path``."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def split_ranges(path: str, start: int, end: int, size: int) -> list[tuple[int, int]]:
    """[start, end) cut into ranges of about ``size`` bytes, each beginning at a line start."""
    cuts = [start]
    with open(path, "rb") as fh:
        at = start + size
        while at < end:
            fh.seek(at - 1)
            fh.readline()  # to the end of the line holding byte at - 1
            cut = fh.tell()
            if cut >= end:
                break
            if cut > cuts[-1]:
                cuts.append(cut)
            at = cut + size
    cuts.append(end)
    return list(zip(cuts, cuts[1:], strict=False))


def _join(
    results: Iterator[RangeCheck],
    start: int,
    tenant: bytes,
    progress: Callable[[int], None] | None,
) -> ChainHead | None:
    """The ranges' results joined in order; None when any failed or two do not link."""
    count, head_seq, head_hash, events_end = 0, 0, GENESIS_HASH, None
    items: list[tuple[int, bytes]] = []
    for result in results:
        if events_end is not None:
            if result.count:  # event lines after the state lines: the sequential walk says so
                return None
            continue
        if not result.ok:
            return None
        if result.count:
            expected = HASH_PREFIX + head_hash + tenant + INT64.pack(head_seq + 1)
            if result.first_start != expected:
                return None
            count, head_seq, head_hash = count + result.count, result.last_seq, result.last_hash
            items += result.state_items
            if progress is not None:
                progress(count)
        events_end = result.events_end
    return ChainHead(count, head_seq, head_hash, start, items)


def check_in_parallel(
    path: str | os.PathLike[str],
    identity: tuple[int, int],
    events_start: int,
    tenant: bytes,
    *,
    check_payloads: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ChainHead | None:
    """Check the chain of the version-3 bundle at ``path`` (the file with ``identity``; event
    lines from byte ``events_start``) on :func:`workers` processes.

    Returns the proved chain, or None when the fast checks did not pass everywhere: then the
    caller walks the file sequentially, which finds and names the problems. Raises
    :class:`WorkerError` when a worker process failed.
    """
    name = os.fspath(path)
    end = Path(name).stat().st_size
    ranges = split_ranges(name, events_start, end, CHUNK_BYTES)
    job = Job(
        path=name,
        identity=identity,
        tenant=tenant,
        check_payloads=check_payloads,
        prefix=HASH_PREFIX,
        erasure_type=ERASURE_EVENT.encode("utf-8"),
    )
    with _Workers(min(workers(), len(ranges)), job, ranges) as results:
        return _join(results, events_start, tenant, progress)


class WorkerError(RuntimeError):
    """A worker process of the parallel check failed (the caller walks sequentially)."""


class _Workers:
    """``n`` worker processes (:data:`WORKER_COMMAND`), range i given to worker i mod n;
    iterating yields the results in range order.

    Plain subprocesses, not a multiprocessing pool: ``fork`` from a caller with threads (the
    CLI's progress display) may copy a lock held forever, and ``spawn`` runs the caller's main
    module again (0.5 s for the CLI's, and the whole script for an unguarded one). A worker
    imports only the standard library and reads nothing but its ranges.
    """

    def __init__(self, n: int, job: Job, ranges: list[tuple[int, int]]) -> None:
        self._ranges = ranges
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            for k in range(n):
                proc = subprocess.Popen(
                    WORKER_COMMAND,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                self._procs.append(proc)
                mine = "".join(f"{lo} {hi}\n" for lo, hi in ranges[k::n])
                assert proc.stdin is not None
                proc.stdin.write((job.to_json() + "\n" + mine).encode("utf-8"))
                proc.stdin.close()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Iterator[RangeCheck]:
        return self._results()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _results(self) -> Iterator[RangeCheck]:
        n = len(self._procs)
        for i in range(len(self._ranges)):
            proc = self._procs[i % n]
            assert proc.stdout is not None
            try:
                result = range_worker.read_result(proc.stdout)
            except (ValueError, TypeError) as exc:
                raise WorkerError(f"a worker process answered something else: {exc}") from None
            if result is None:
                raise WorkerError(f"a worker process ended early (status {proc.wait()})")
            yield result

    def close(self) -> None:
        """Stop the workers (those still running have nothing left to give)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
