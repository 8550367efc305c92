"""Fixtures for the provider tests: workspaces with Kora tokens, providers, log capture.

Everything runs against the real substrate of ``tests/conftest.py`` and a real gateway, started
by the provider itself over stdio (or by a helper over HTTP). Tests here are synchronous: the
provider runs its own event loop on its own thread, exactly as under Hermes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from provider_helpers import KoraWorkspace, create_kora_workspace, provider_config

from isokron.provider import IsoKronMemoryProvider
from isokron.substrate.dsn import SubstrateDSNs


@pytest.fixture
def kora_workspace(substrate: SubstrateDSNs) -> Callable[[str], KoraWorkspace]:
    """Factory: a new workspace and a Kora token for it."""

    def make(prefix: str = "prov") -> KoraWorkspace:
        return create_kora_workspace(substrate.admin, prefix)

    return make


@pytest.fixture
def make_provider(
    substrate: SubstrateDSNs, tmp_path: Path
) -> Iterator[Callable[..., IsoKronMemoryProvider]]:
    """Factory: an initialized provider for a workspace (shut down after the test)."""
    made: list[IsoKronMemoryProvider] = []

    def make(
        ws: KoraWorkspace,
        *,
        session_id: str = "sess-1",
        agent_context: str = "primary",
        clock: Callable[[], float] = time.monotonic,
        initialize: bool = True,
        wait: bool = True,
        hermes_home: Path | None = None,
        **overrides: Any,
    ) -> IsoKronMemoryProvider:
        provider = IsoKronMemoryProvider(provider_config(substrate, ws, **overrides), clock=clock)
        made.append(provider)
        if initialize:
            provider.initialize(
                session_id,
                platform="cli",
                agent_context=agent_context,
                hermes_home=str(hermes_home or tmp_path),
            )
            if wait and provider.writes_enabled:
                # The gateway process starts in the background; tests that write at once wait
                # for it so that a loaded machine cannot reorder what they assert on.
                assert provider.wait_ready(60), "the gateway did not start"
        return provider

    yield make
    for provider in made:
        provider.shutdown()


@pytest.fixture
def provider_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture the provider's logs at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="isokron.provider")
    return caplog
