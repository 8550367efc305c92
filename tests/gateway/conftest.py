"""Fixtures of the gateway tests (helpers live in ``gateway_harness``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from gateway_harness import Gateways

from isokron.substrate.dsn import SubstrateDSNs


@pytest.fixture(scope="module", params=["stdio", "http"])
async def gateways(
    request: pytest.FixtureRequest,
    substrate: SubstrateDSNs,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Gateways]:
    """The gateway over each transport in turn (the module's tests run once per transport)."""
    gw = Gateways(request.param, substrate, tmp_path_factory.mktemp(f"gw-{request.param}"))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.close()
