"""``python -m isokron.gateway``: run the gateway (the options of ``isokron serve``).

This is an entry point, so it configures logging (to stderr: stdout is the stdio transport).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from isokron.errors import IsoKronError
from isokron.gateway.server import run_gateway
from isokron.gateway.settings import (
    DEFAULT_GOVERNANCE_TTL_SECONDS,
    DEFAULT_HOST,
    DEFAULT_MAINTAIN_INTERVAL_SECONDS,
    DEFAULT_PORT,
    TOKEN_ENV,
    TRANSPORTS,
    GatewaySettings,
)

READER_DSN_ENV = "ISOKRON_READER_DSN"
GATEWAY_DSN_ENV = "ISOKRON_GATEWAY_DSN"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m isokron.gateway",
        description=(
            "Serve the IsoKron gateway (MCP). Over stdio the service token is read from "
            f"{TOKEN_ENV}; over HTTP each request sends 'Authorization: Bearer wsk_...'."
        ),
    )
    parser.add_argument(
        "--reader-dsn",
        default=os.environ.get(READER_DSN_ENV),
        help=f"DSN of the reader role (default ${READER_DSN_ENV})",
    )
    parser.add_argument(
        "--gateway-dsn",
        default=os.environ.get(GATEWAY_DSN_ENV),
        help=f"DSN of the gateway role (default ${GATEWAY_DSN_ENV})",
    )
    parser.add_argument("--transport", choices=TRANSPORTS, default="stdio")
    parser.add_argument("--host", default=DEFAULT_HOST, help="HTTP bind address")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port")
    parser.add_argument(
        "--governance-ttl",
        type=float,
        default=DEFAULT_GOVERNANCE_TTL_SECONDS,
        help="seconds policies, capabilities, constitution and tokens are cached (0: off)",
    )
    parser.add_argument(
        "--maintain-interval",
        type=float,
        default=DEFAULT_MAINTAIN_INTERVAL_SECONDS,
        help="seconds between maintenance passes (expiry, retention, key TTL; 0: off)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not args.reader_dsn or not args.gateway_dsn:
        print(
            "error: give --reader-dsn and --gateway-dsn (or set "
            f"{READER_DSN_ENV} and {GATEWAY_DSN_ENV})",
            file=sys.stderr,
        )
        return 2
    try:
        settings = GatewaySettings(
            reader_dsn=args.reader_dsn,
            gateway_dsn=args.gateway_dsn,
            transport=args.transport,
            host=args.host,
            port=args.port,
            governance_ttl_seconds=args.governance_ttl,
            maintain_interval_seconds=args.maintain_interval,
        )
        run_gateway(settings)
    except IsoKronError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
