"""The reference MCP memory server (npm ``@modelcontextprotocol/server-memory``).

It is what a user would pick instead of IsoKron for agent memory over MCP: a knowledge graph
kept in one JSON Lines file (``MEMORY_FILE_PATH``). Each write tool call reads the whole file,
adds to the graph and rewrites the whole file (``KnowledgeGraphManager.loadGraph`` /
``saveGraph`` in its ``dist/index.js``). It speaks stdio only.

The runner installs it into ``bench/.npm`` (gitignored) with npm on first use. Preloading
writes the file directly in the server's own format: one ``{"type": "entity", "name",
"entityType", "observations"}`` object per line, lines joined by ``\\n``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

PACKAGE = "@modelcontextprotocol/server-memory"
PREFIX = Path(__file__).resolve().parent / ".npm"
ENTRY = PREFIX / "node_modules" / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"


class ReferenceUnavailable(RuntimeError):
    """node/npm are missing or the package could not be installed."""


def ensure_installed() -> Path:
    """Install the package into ``bench/.npm`` unless it is there; return its entry script."""
    if ENTRY.exists():
        return ENTRY
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ReferenceUnavailable("node and npm are needed for the reference memory server")
    PREFIX.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(PREFIX), PACKAGE],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not ENTRY.exists():
        raise ReferenceUnavailable(f"npm install {PACKAGE} failed: {done.stderr.strip()[-500:]}")
    return ENTRY


def installed_version() -> str:
    """The installed package's version."""
    manifest = ENTRY.parent.parent / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def entity(name: str, content: str) -> dict[str, object]:
    """One entity as ``create_entities`` takes it (and as the file stores it, minus type)."""
    return {"name": name, "entityType": "decision", "observations": [content]}


def write_memory_file(path: Path, entities: list[dict[str, object]]) -> None:
    """Write ``entities`` in the server's JSONL format (what ``saveGraph`` writes)."""
    lines = [json.dumps({"type": "entity", **e}) for e in entities]
    path.write_text("\n".join(lines), encoding="utf-8")


def entity_names(path: Path) -> set[str]:
    """Names of the entities stored in the file."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            if item.get("type") == "entity":
                names.add(item["name"])
    return names
