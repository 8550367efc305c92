"""What every command shares: where the substrate is, how results are printed, how errors end.

The CLI only parses, calls the library and prints. Library errors become one clean line on
stderr and exit code 1 (2 for usage errors, which Typer reports itself).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import psycopg
import typer
from rich.console import Console

from isokron.errors import IsoKronError, RefusalError
from isokron.substrate.dsn import SubstrateDSNs, check_admin_dsn
from isokron.substrate.embedded import DATA_DIR_ENV, default_data_dir, start_embedded

DSN_ENV = "ISOKRON_DSN"
READER_DSN_ENV = "ISOKRON_READER_DSN"
GATEWAY_DSN_ENV = "ISOKRON_GATEWAY_DSN"

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

T = TypeVar("T")

# Reusable options: a flag means the same thing on every command.
DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar=DSN_ENV,
        help="Admin DSN of the substrate (postgresql://user@host:port/db). "
        "Default: the embedded PostgreSQL in the user data directory.",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="Data directory of the embedded PostgreSQL (used when no --dsn is given).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
WorkspaceArg = Annotated[str, typer.Argument(help="Workspace id, e.g. acme.")]


@dataclass(frozen=True, slots=True)
class Target:
    """Where the commands of one invocation talk to."""

    dsns: SubstrateDSNs
    embedded: bool


def resolve_target(dsn: str | None, data_dir: Path | None = None) -> Target:
    """The DSNs to use: the given admin DSN, or the embedded server (started if needed)."""
    if dsn:
        admin = check_admin_dsn(dsn)
        embedded = False
    else:
        admin = start_embedded(data_dir or default_data_dir())
        embedded = True
    return Target(
        dsns=SubstrateDSNs.derive(
            admin,
            reader=os.environ.get(READER_DSN_ENV) or None,
            gateway=os.environ.get(GATEWAY_DSN_ENV) or None,
        ),
        embedded=embedded,
    )


def run_async(coro: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """Run one coroutine to completion from a synchronous command."""
    return asyncio.run(coro)  # type: ignore[arg-type]


def boundary(func: Callable[..., T]) -> Callable[..., T]:
    """Turn IsoKron errors into one line on stderr and exit 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except RefusalError as exc:
            err.print(f"error: {one_line(exc.message)} ({exc.code})", markup=False)
            raise typer.Exit(1) from None
        except IsoKronError as exc:
            err.print(
                f"error: {one_line(_hint(str(exc), getattr(exc, 'sqlstate', None)))}", markup=False
            )
            raise typer.Exit(1) from None
        except psycopg.Error as exc:
            message = _hint(str(exc), getattr(exc, "sqlstate", None))
            err.print(f"error: {one_line(message)}", markup=False)
            raise typer.Exit(1) from None
        except RecursionError:
            err.print("error: the input is nested too deeply", markup=False)
            raise typer.Exit(1) from None
        except (OSError, ValueError, OverflowError, json.JSONDecodeError) as exc:
            err.print(f"error: {one_line(str(exc))}", markup=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


# SQLSTATEs whose server message alone does not say what the operator should do.
_SQLSTATE_HINTS = {
    "42P01": "the database has no IsoKron schema; run `isokron db upgrade` (or check --dsn)",
    "3F000": "the database has no IsoKron schema; run `isokron db upgrade` (or check --dsn)",
    "42501": "permission denied; operator commands need the admin (owner) DSN in --dsn",
}


def _hint(message: str, sqlstate: str | None) -> str:
    hint = _SQLSTATE_HINTS.get(sqlstate or "")
    first = message.splitlines()[0] if message.strip() else message
    return f"{hint} ({first})" if hint else message


# user:password@ inside any URL-shaped text: whatever a library puts in a message, a DSN's
# password is never printed.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*):[^\s@]*@", re.IGNORECASE)


def one_line(text: str) -> str:
    """``text`` on one line (driver messages span several), any URL password masked."""
    joined = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return _URL_PASSWORD.sub(r"\1:***@", joined)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (UUIDs, datetimes and bytes rendered as strings)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
