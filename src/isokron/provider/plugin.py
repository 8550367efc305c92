"""Hermes Agent's entry point into IsoKron: ``register(ctx)``.

Two routes lead here, and both end in ``ctx.register_memory_provider(IsoKronMemoryProvider())``:

* Hermes 0.19.0 scans ``$HERMES_HOME/plugins/<name>/__init__.py`` (written by
  :func:`isokron.provider.install.install_hermes_plugin`), which imports this ``register``;
* newer Hermes reads the ``hermes_agent.memory_providers`` entry point that the isokron
  package declares (``isokron = "isokron.provider.plugin:register"``).

``config.yaml`` then selects it with ``memory.provider: isokron``.
"""

from __future__ import annotations

import logging
from typing import Any

from isokron.provider.provider import PROVIDER_NAME, IsoKronMemoryProvider

log = logging.getLogger("isokron.provider.plugin")

ENTRY_POINT_GROUP = "hermes_agent.memory_providers"


def register(ctx: Any) -> None:
    """Register one :class:`IsoKronMemoryProvider` with the host's plugin context.

    A context without ``register_memory_provider`` (Hermes's general plugin loader, which does
    not load memory providers) is logged and left alone; nothing is raised into the host.
    """
    register_provider = getattr(ctx, "register_memory_provider", None)
    if not callable(register_provider):
        log.warning(
            "[isokron.plugin.wrong_context] %s cannot register memory providers; select IsoKron "
            "with memory.provider: %s in config.yaml instead",
            type(ctx).__name__,
            PROVIDER_NAME,
        )
        return
    register_provider(IsoKronMemoryProvider())
