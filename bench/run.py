"""The benchmark runner: ``.venv/bin/python -m bench [--quick] [--dsn ADMIN_DSN] [--only ...]``.

Runs every benchmark once against a fresh, migrated database, prints one table with each
figure beside its baseline, says for each target of issue 5 whether it is met, and writes the
figures to ``bench/results/<timestamp>.json``. A benchmark that fails is reported as an error
and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
import traceback
from datetime import UTC, datetime

from bench import machine
from bench.config import FULL, QUICK
from bench.report import Section, render_markdown, render_table, write_json
from bench.substrate import bench_database

#: Benchmark modules in the order they run (each has ``run(db, sizes) -> Section``). Capacity
#: runs before the benchmarks that load large databases into the same server: their autovacuum
#: and checkpoints would otherwise be counted in its PostgreSQL CPU per write.
BENCHMARKS: dict[str, str] = {
    "pipeline": "bench.pipeline",
    "capacity": "bench.gateway_capacity",
    "chain": "bench.chain_cost",
    "verify": "bench.verification",
    "gateway": "bench.gateway_latency",
    "provider": "bench.provider_turn",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run IsoKron's benchmarks (issue 5) and compare them with their baselines.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--dsn",
        help="admin DSN of a PostgreSQL server to use instead of the embedded one "
        "(a fresh database is created on it and dropped afterwards)",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    sizes = QUICK if args.quick else FULL
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            print(
                f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr
            )
            return 2
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    sections: list[Section] = []
    print(f"IsoKron benchmarks ({'quick' if args.quick else 'full'}): {', '.join(names)}")
    with bench_database(args.dsn) as db:
        print(
            f"PostgreSQL {db.server_version} ({'embedded' if db.embedded else 'given DSN'}), "
            f"database {db.name}"
        )
        for name in names:
            print(f"-- {name} ...", flush=True)
            start = time.perf_counter()
            load_before = os.getloadavg()
            try:
                module = importlib.import_module(BENCHMARKS[name])
                section = module.run(db, sizes)
            except Exception as exc:  # noqa: BLE001 - one failure must not stop the others
                traceback.print_exc()
                section = Section(name, error=f"{type(exc).__name__}: {exc}")
            section.seconds = time.perf_counter() - start
            # Other work on the machine skews every figure: keep the load beside them.
            section.data["loadavg_before"] = load_before
            section.data["loadavg_after"] = os.getloadavg()
            print(f"   done in {section.seconds:.0f} s", flush=True)
            sections.append(section)
        info = machine.describe(db.server_version)
    print(render_table(sections))
    if args.markdown:
        print()
        print(render_markdown(sections))
    total = time.perf_counter() - t0
    print(
        f"\ntotal {total:.0f} s on {info['cpu_model']} ({info['nproc']} cores, "
        f"{info['memory_gib']} GiB), PostgreSQL {info['postgres_server_used']}"
    )
    if not args.no_json:
        info["total_seconds"] = round(total, 1)
        info["mode"] = "quick" if args.quick else "full"
        path = write_json(sections, info, command, started)
        print(f"results: {path}")
    return 1 if any(s.error for s in sections) else 0
