"""IsoKron's Hermes Agent memory provider.

Public API (everything else is internal)::

    IsoKronMemoryProvider        the provider (a Hermes ``MemoryProvider``)
    IsoKronProviderConfig        its validated settings;  load_config() merges file/env/code
    register                     Hermes plugin entry point (``hermes_agent.memory_providers``)
    install_hermes_plugin        writes $HERMES_HOME/plugins/isokron/   (``isokron hermes install``)
    render_context               prompt block + session context dict    (``isokron context``)
    run_demo, DemoReport         a scripted session without an LLM      (``isokron demo``)
    TOOL_NAMES                   the names of the tools the model gets
    errors                       ProviderError, IsoKronMCPInvocationError, GatewayUnavailableError,
                                 GatewayRefusedError

Modules: ``config`` (settings), ``loop`` (the I/O thread), ``cache`` (TTL cache), ``health``
(outage tracking), ``reader`` (reads), ``gateway_client`` (MCP client), ``writes`` (chained
writes and their outbox), ``prompt_block`` (the §1–§6 block), ``tools`` (model tools),
``provider`` (the hooks, a facade over: ``session_state`` (session id, agent context, model),
``resources`` (what ``initialize`` opens and releases), ``identity_block`` (the block's memo and
re-verification), ``hook_writes`` (what the write hooks write)), ``outbox``, ``watchdog``,
``plugin``/``install`` (Hermes integration), ``context``, ``demo``.
"""

from isokron.provider.config import IsoKronProviderConfig, load_config
from isokron.provider.context import render_context
from isokron.provider.demo import DemoReport, run_demo
from isokron.provider.errors import (
    GatewayRefusedError,
    GatewayUnavailableError,
    IsoKronMCPInvocationError,
    ProviderError,
)
from isokron.provider.install import install_hermes_plugin
from isokron.provider.plugin import register
from isokron.provider.provider import IsoKronMemoryProvider
from isokron.provider.tools import TOOL_NAMES

__all__ = [
    "TOOL_NAMES",
    "DemoReport",
    "GatewayRefusedError",
    "GatewayUnavailableError",
    "IsoKronMCPInvocationError",
    "IsoKronMemoryProvider",
    "IsoKronProviderConfig",
    "ProviderError",
    "install_hermes_plugin",
    "load_config",
    "register",
    "render_context",
    "run_demo",
]
