"""The MCP SDK's own floor: an ``MCPServer`` with one tool that returns "ok".

``python -m bench.sdk_noop stdio`` serves it over stdio (``MCPServer.run``, the SDK's default
runner); ``python -m bench.sdk_noop http PORT`` over streamable HTTP with JSON replies
(``streamable_http_app(json_response=True)`` under uvicorn's defaults, which pick uvloop and
httptools when they are installed, as the gateway does). The gateway benchmarks set IsoKron's
write beside a call of this tool through the same client or load generator in the same run.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

NOOP_TOOL = "noop"


def build() -> MCPServer:
    server: MCPServer = MCPServer("sdk-noop")

    @server.tool(name=NOOP_TOOL, description="Does nothing; returns ok.")
    def noop() -> str:
        return "ok"

    return server


def main(argv: list[str]) -> int:
    server = build()
    if argv[:1] == ["stdio"]:
        server.run("stdio")
        return 0
    if argv[:1] == ["http"] and len(argv) == 2:
        import uvicorn

        app = server.streamable_http_app(json_response=True)
        uvicorn.run(app, host="127.0.0.1", port=int(argv[1]), log_level="warning")
        return 0
    print("usage: python -m bench.sdk_noop stdio | http PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
