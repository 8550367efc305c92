"""Peak resident memory (RSS) of processes, sampled with psutil on a background thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import psutil

SAMPLE_INTERVAL_SECONDS = 0.25


class PeakRss:
    """Samples the RSS of the processes ``find()`` returns, keeping the peak of each and of
    their sum. Use as a context manager; ``peak_mib`` is the largest single process seen."""

    def __init__(
        self,
        find: Callable[[], Iterable[psutil.Process]],
        interval: float = SAMPLE_INTERVAL_SECONDS,
    ):
        self._find = find
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)
        self.peak_bytes = 0
        self.peak_sum_bytes = 0
        self.samples = 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def sample(self) -> None:
        """Take one sample now (also called by the thread)."""
        total = 0
        try:
            procs = list(self._find())
        except psutil.Error:
            procs = []
        for proc in procs:
            try:
                rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total += rss
            self.peak_bytes = max(self.peak_bytes, rss)
        self.peak_sum_bytes = max(self.peak_sum_bytes, total)
        self.samples += 1

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def peak_sum_mib(self) -> float:
        return self.peak_sum_bytes / 2**20


def children_matching(needle: str) -> Callable[[], list[psutil.Process]]:
    """A finder for this process's descendants whose command line contains ``needle``."""
    me = psutil.Process()

    def find() -> list[psutil.Process]:
        found = []
        for child in me.children(recursive=True):
            try:
                if needle in " ".join(child.cmdline()):
                    found.append(child)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    return find


def this_process() -> Callable[[], list[psutil.Process]]:
    """A finder for the current process alone."""
    me = psutil.Process()
    return lambda: [me]
