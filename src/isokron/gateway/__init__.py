"""The IsoKron gateway: an MCP server that is the only way to write.

Public API::

    GatewaySettings   where the gateway connects, which transport it serves, cache TTL
    run_gateway       serve in the foreground until interrupted (the CLI's ``isokron serve``)
    build_server      the MCPServer for a Gateway (tests, embedding)
    open_gateway      a Gateway with its two connection pools, as an async context manager
    Gateway           the pipeline every tool call goes through
    screen            the pipeline's pure stages, as one synchronous function (benchmarks)

``python -m isokron.gateway`` runs it with the same options as ``isokron serve``.
"""

from isokron.gateway.pipeline import Screening, Verdict, screen
from isokron.gateway.server import build_server, open_gateway, run_gateway
from isokron.gateway.service import Gateway
from isokron.gateway.settings import GatewaySettings

__all__ = [
    "Gateway",
    "GatewaySettings",
    "Screening",
    "Verdict",
    "build_server",
    "open_gateway",
    "run_gateway",
    "screen",
]
