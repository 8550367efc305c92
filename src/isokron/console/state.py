"""The console's process state: its pools (opened lazily, so the Hermes tab needs no lifespan),
its sessions, checkpoints and verification jobs."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from platformdirs import user_data_dir

from isokron.console.actions import OperatorActions
from isokron.console.checkpoints import CheckpointStore
from isokron.console.panels import PanelContext
from isokron.console.sessions import Session, SessionStore
from isokron.console.settings import ConsoleSettings
from isokron.errors import NotFoundError
from isokron.substrate import audit
from isokron.substrate.connection import create_pool

log = logging.getLogger("isokron.console")

MAX_JOBS_PER_SESSION = 8


@dataclass(slots=True)
class VerifyJob:
    """One verification run in a worker thread; the browser polls its progress."""

    job_id: str
    workspace_id: str
    state: str = "running"  # running | done | failed
    checked: int = 0
    total: int = 0
    # The row and state checks after the chain (chain.state.RowProgress): phase and its count.
    phase: str = "chain"
    phase_count: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "job_id": self.job_id,
                "state": self.state,
                "checked": self.checked,
                "total": self.total,
                "phase": self.phase,
                "phase_count": self.phase_count,
                "result": self.result,
                "error": self.error,
            }


class ConsoleState:
    """Pools, sessions and jobs of one console process."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.sessions = SessionStore(
            idle_seconds=settings.session_idle_seconds, max_seconds=settings.session_max_seconds
        )
        state_dir = settings.state_dir or Path(user_data_dir("isokron")) / "console"
        self.checkpoints = CheckpointStore(state_dir / "checkpoints")
        self._pools: dict[str, asyncpg.Pool] = {}
        self._lock = asyncio.Lock()

    async def pool(self, role: str) -> asyncpg.Pool:
        """The pool of ``role`` (admin, reader or gateway), opened on first use."""
        async with self._lock:
            if role not in self._pools:
                dsn = getattr(self.settings.dsns, role)
                self._pools[role] = await create_pool(dsn, min_size=0, max_size=4)
            return self._pools[role]

    async def close(self) -> None:
        async with self._lock:
            for pool in self._pools.values():
                await pool.close()
            self._pools.clear()

    async def panel_context(self, session: Session) -> PanelContext:
        return PanelContext(
            workspace_id=session.principal.workspace_id,
            admin_dsn=self.settings.dsns.admin,
            admin_pool=await self.pool("admin"),
            reader_pool=await self.pool("reader"),
            checkpoints=self.checkpoints,
            gateway_url=self.settings.gateway_url,
            hermes_home=self.settings.hermes_home,
        )

    async def actions(self) -> OperatorActions:
        return OperatorActions(await self.pool("reader"), await self.pool("gateway"))

    def start_verify(self, session: Session) -> VerifyJob:
        """Start verifying the session's workspace against its checkpoints, in a thread."""
        jobs = session.verify_jobs
        while len(jobs) >= MAX_JOBS_PER_SESSION:
            jobs.pop(next(iter(jobs)))
        ws = session.principal.workspace_id
        job = VerifyJob(job_id=secrets.token_hex(8), workspace_id=ws)
        jobs[job.job_id] = job
        threading.Thread(target=self._verify, args=(job,), daemon=True).start()
        return job

    def _verify(self, job: VerifyJob) -> None:
        def progress(n: int) -> None:
            with job.lock:
                job.checked = n

        def row_progress(phase: str, n: int) -> None:
            with job.lock:
                job.phase, job.phase_count = phase, n

        try:
            cps = self.checkpoints.load(job.workspace_id)
            try:
                head = audit.make_checkpoint(self.settings.dsns.admin, job.workspace_id)
                job.total = head.seq
            except (NotFoundError, audit.SubstrateError):
                job.total = 0
            result = audit.verify_workspace(
                self.settings.dsns.admin,
                job.workspace_id,
                checkpoints=cps,
                progress=progress,
                row_progress=row_progress,
            )
            with job.lock:
                job.checked = result.chain.events_checked
                job.result = result.to_dict()
                job.state = "done"
        except Exception as exc:  # noqa: BLE001 — a worker thread must report, not die silently
            log.warning("[isokron.console.verify.failed] %s: %s", type(exc).__name__, exc)
            with job.lock:
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"

    def take_checkpoint(self, workspace_id: str) -> dict[str, Any]:
        cp = audit.make_checkpoint(self.settings.dsns.admin, workspace_id)
        self.checkpoints.add(workspace_id, cp)
        return cp.to_dict()
