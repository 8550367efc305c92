"""The operator console: boot gates, the chain, verification, decisions, governance, tokens,
activity and a diagnostics bundle, in a browser.

Two homes, one app: ``isokron console`` serves :func:`create_app` on 127.0.0.1, and
``isokron hermes install`` adds it as a tab of Hermes's dashboard (:mod:`.hermes`). Reads go
through the reader role under row-level security; every change is the same chained write
operation the CLI makes (:mod:`isokron.substrate.writes`), by the signed-in operator.
"""

from isokron.console.app import ConsoleApp, create_app
from isokron.console.settings import ConsoleSettings

__all__ = ["ConsoleApp", "ConsoleSettings", "create_app"]
