"""The console as a tab of Hermes's web dashboard (``hermes dashboard``).

``isokron hermes install`` writes ``$HERMES_HOME/plugins/isokron/dashboard/``: a manifest, the
console's own JS and CSS (copied from this package), and ``plugin_api.py``, which only imports
:func:`make_router` from here. Hermes mounts the router under ``/api/plugins/isokron/`` behind
its own dashboard session check; every request is forwarded to the same Starlette app that
``isokron console`` serves, so the two homes cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from isokron.console.app import ConsoleApp
from isokron.console.settings import ConsoleSettings, settings_from_environment

PLUGIN_NAME = "isokron"
API_PREFIX = f"/api/plugins/{PLUGIN_NAME}"
BASE_SCOPE_KEY = "isokron.base"


class _Forward:
    """An ASGI app (not a function, so Starlette does not wrap it as a request handler) that
    hands a request under ``API_PREFIX`` to the console with the prefix stripped."""

    def __init__(self, console: Any) -> None:
        self._console = console

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope["path"]
        at = path.find(API_PREFIX)
        rest = path[at + len(API_PREFIX) :] if at >= 0 else path
        inner = dict(scope)
        inner.update(path=rest or "/", raw_path=(rest or "/").encode(), root_path="")
        inner[BASE_SCOPE_KEY] = API_PREFIX
        await self._console(inner, receive, send)


def make_router(settings: ConsoleSettings | None = None) -> Any:
    """A FastAPI ``APIRouter`` (Hermes's web framework) forwarding everything to the console."""
    from fastapi import APIRouter  # Hermes's dependency, imported only inside Hermes
    from starlette.routing import Route

    console = ConsoleApp(settings or settings_from_environment()).asgi
    router = APIRouter()
    router.routes.append(Route("/{path:path}", endpoint=_Forward(console), methods=["GET", "POST"]))
    return router
