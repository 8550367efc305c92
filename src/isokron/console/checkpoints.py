"""Checkpoints the console takes, kept outside the database (one JSON-lines file per workspace).

A checkpoint is the chain head (tenant, seq, hash) remembered elsewhere: only a hash kept
outside the database reveals a chain rewritten consistently from some point on.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from isokron.chain import Checkpoint
from isokron.errors import ChainError, ConfigError

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class CheckpointStore:
    """Append-only checkpoint files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _file(self, workspace_id: str) -> Path:
        return self.directory / f"{_SAFE.sub('_', workspace_id)}.checkpoints.jsonl"

    def load(self, workspace_id: str) -> list[Checkpoint]:
        path = self._file(workspace_id)
        if not path.is_file():
            return []
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    out.append(Checkpoint.from_dict(json.loads(line)))
                except (ChainError, ValueError, KeyError, TypeError) as exc:
                    raise ConfigError(f"{path} line {n} is not a checkpoint: {exc}") from exc
        return out

    def add(self, workspace_id: str, checkpoint: Checkpoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._file(workspace_id)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(checkpoint.to_dict()) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
