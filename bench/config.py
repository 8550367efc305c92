"""Run sizes: ``--quick`` (smoke run, about two minutes) and full (the sizes of issue 5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does."""

    quick: bool
    chain_seconds: float  # length of each timed append / INSERT run
    chain_concurrency: int  # connections appending at once
    chain_tenants: int  # tenants of the multi-tenant append run
    verify_events: int  # length of the chain that is verified
    pipeline_iterations: int  # pre-screen + authorization calls timed
    gateway_items: tuple[int, ...]  # items already stored when write latency is measured
    gateway_samples: int  # timed calls per tool, transport and store size
    throughput_clients: tuple[int, ...]  # concurrent MCP clients
    throughput_seconds: float  # length of each throughput run
    provider_items: tuple[int, ...]  # scratchpad entries (and events) in the workspace
    provider_samples: int  # timed calls per provider figure


FULL = Sizes(
    quick=False,
    chain_seconds=8.0,
    chain_concurrency=8,
    chain_tenants=8,
    verify_events=100_000,
    pipeline_iterations=50_000,
    gateway_items=(1_000, 10_000, 50_000),
    gateway_samples=300,
    throughput_clients=(1, 4, 16),
    throughput_seconds=8.0,
    provider_items=(100, 10_000, 100_000),
    provider_samples=200,
)

QUICK = Sizes(
    quick=True,
    chain_seconds=1.0,
    chain_concurrency=8,
    chain_tenants=8,
    verify_events=10_000,
    pipeline_iterations=5_000,
    gateway_items=(100, 300, 600),
    gateway_samples=20,
    throughput_clients=(4,),
    throughput_seconds=1.0,
    provider_items=(100, 1_000, 2_000),
    provider_samples=20,
)
