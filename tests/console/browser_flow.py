"""The browser walk-through shared by the standalone console and the Hermes tab tests."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from console_support import PLANTED_SECRETS, SeededWorkspace

PANEL_CHECKS: dict[str, str] = {
    # panel -> a selector that exists only when the panel rendered real data
    "gates": ".ik-gate[data-gate='charter'][data-status='pass']",
    "chain": "#ik-chain-rows tr[data-seq]",
    "verification": "#ik-verify-run",
    "escalations": ".ik-card[data-escalation]",
    "proposals": ".ik-card[data-proposal]",
    "policies": "tr[data-policy='policy.kora_disabled']",
    "capabilities": "#ik-matrix td.ik-granted",
    "charter": "#ik-charter-diff .ik-add",
    "constitution": "#ik-rules tr",
    "scratchpad": "tr[data-drifted='1']",
    "graph": "#ik-graph .ik-node-superseded",
    "tokens": "#ik-tokens tr[data-token]",
    "activity": "#ik-chart-denials rect",
    "runbooks": ".ik-card[data-runbook='token-rotation']",
}


class Walk:
    """Drives one signed-in console page (standalone or inside Hermes)."""

    def __init__(self, page: Any, shots: Path, prefix: str) -> None:
        self.page = page
        self.shots = shots
        self.prefix = prefix
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on(
            "console",
            lambda m: self.errors.append(m.text) if m.type == "error" else None,
        )

    def sign_in(self, token: str, *, read_only: bool = False) -> None:
        self.page.fill("#ik-token", token)
        if read_only:
            self.page.check("#ik-readonly")
        self.page.click("#ik-signin")
        self.page.wait_for_selector("#ik-workspace")

    def open(self, panel: str) -> None:
        self.page.click(f".ik-nav button[data-panel='{panel}']")
        self.page.wait_for_selector(f"#ik-panel-{panel} .ik-panel-body[data-loaded='1']")

    def shot(self, name: str) -> Path:
        path = self.shots / f"{self.prefix}{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def every_panel(self) -> list[Path]:
        """Open each panel, wait for its data, screenshot it."""
        shots = []
        for n, (panel, selector) in enumerate(PANEL_CHECKS.items(), 1):
            self.open(panel)
            self.page.wait_for_selector(f"#ik-panel-{panel} {selector}")
            if panel == "verification":
                self.verify()
            if panel == "chain":
                self.page.click("#ik-chain-rows tr[data-seq]")
                self.page.wait_for_selector("#ik-payload")
                assert "✓" in self.page.inner_text("#ik-prev-link")
            if panel == "constitution":
                self.dry_run()
            shots.append(self.shot(f"{n:02d}-{panel}"))
        return shots

    def verify(self) -> None:
        self.page.click("#ik-checkpoint")
        self.page.wait_for_selector("#ik-checkpoints tr td")
        self.page.click("#ik-verify-run")
        self.page.wait_for_selector("#ik-verdict")
        text = self.page.inner_text("#ik-verdict")
        # The seeded workspace has a scratchpad row edited behind the write path's back:
        # verification names it (the chain itself still links).
        assert "events" in text and "checkpoint" in text, text
        # The last poll names the row and state checks' final phase with its count.
        status = self.page.inner_text("#ik-verify-status")
        assert status.startswith("done — ") and "state rows checked" in status, status

    def dry_run(self) -> None:
        self.page.fill("#ik-dry-text", f"here is my key {PLANTED_SECRETS['sk']}")
        self.page.click("#ik-dry-run")
        self.page.wait_for_selector("#ik-dry-effect")
        assert self.page.inner_text("#ik-dry-effect") == "deny"

    def decide_escalation(self, ws: SeededWorkspace) -> None:
        self.open("escalations")
        card = f".ik-card[data-escalation='{ws.escalation_id}']"
        self.page.fill(f"{card} .ik-reason", "reviewed: the held node is fine")
        self.page.click(f"{card} .ik-approve")
        self.page.wait_for_selector(f"{card}[data-status='approved']")
        self.open("chain")
        self.page.wait_for_selector("#ik-chain-rows tr[data-type='governance.escalation.decided']")

    def change_policy(self, key: str, value: str) -> None:
        self.open("policies")
        row = f"tr[data-policy='{key}']"
        self.page.fill(f"{row} .ik-policy-value", value)
        self.page.click(f"{row} .ik-save")
        self.page.wait_for_selector(f"{row} .ik-status.ik-ok")

    def issue_and_revoke_token(self) -> str:
        self.open("tokens")
        self.page.fill("#ik-issue-label", "browser test")
        self.page.click("#ik-issue")
        self.page.wait_for_selector("#ik-new-token")
        token = self.page.inner_text("#ik-new-token")
        assert re.fullmatch(r"wsk_[A-Za-z0-9]{40}", token), token
        self.shot("token-issued")
        row = f"#ik-tokens tr[data-prefix='{token[:12]}']"
        self.page.click(f"{row} .ik-revoke")
        self.page.wait_for_selector(
            f"#ik-tokens tr[data-prefix='{token[:12]}'][data-status='revoked']"
        )
        return token

    def download_bundle(self, dest: Path) -> dict[str, Any]:
        with self.page.expect_download() as info:
            self.page.click("#ik-diag")
        download = info.value
        assert download.suggested_filename.startswith("isokron-diagnostics-")
        path = dest / download.suggested_filename
        download.save_as(str(path))
        bundle = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
        manifest: dict[str, Any] = json.loads(bundle.read("manifest.json"))
        return manifest

    def read_only_has_no_controls(self) -> None:
        self.page.wait_for_selector("#ik-readonly-badge")
        self.open("escalations")
        assert self.page.query_selector(".ik-approve") is None
        self.open("tokens")
        assert self.page.query_selector("#ik-issue") is None
        assert self.page.query_selector(".ik-revoke") is None
        self.open("policies")
        assert self.page.query_selector(".ik-save") is None
