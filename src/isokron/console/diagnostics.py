"""The diagnostics bundle: one zip an operator can attach to a support request (seed 001).

* **An explicit allowlist of sources** (:data:`BUNDLE_SOURCES`): the console's panels and the
  runbooks manifest, named one by one — nothing is discovered, so a new panel does not leak
  into bundles until someone adds it here.
* **Per-source failure isolation**: a source that raises becomes a ``failed`` line in
  ``manifest.json`` (with its redacted error); the bundle is still produced, even when every
  source fails.
* **Shape-based redaction** (:mod:`isokron.console.redaction`) of every file, then a
  credential-safety guard that re-scans the redacted text and withholds a file that still holds
  a credential shape.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from isokron import __version__
from isokron.console import panels
from isokron.console.redaction import REDACTED, find_credentials, redact

log = logging.getLogger("isokron.console.diagnostics")

Source = Callable[[panels.PanelContext], Awaitable[Any]]

#: The allowlist: file name in the bundle -> the panel source it is read from.
BUNDLE_SOURCES: tuple[str, ...] = (
    "gates",
    "chain",
    "verification",
    "escalations",
    "proposals",
    "policies",
    "capabilities",
    "charter",
    "constitution",
    "scratchpad",
    "graph",
    "tokens",
    "activity",
    "runbooks",
)


def allowlisted_sources() -> dict[str, Source]:
    """The allowlisted sources, each the same function its panel's API route calls."""
    return {name: panels.PANELS[name][1] for name in BUNDLE_SOURCES}


@dataclass(slots=True)
class BundleReport:
    """What went into a bundle (also written into it as ``manifest.json``)."""

    workspace_id: str
    generated_at: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    redactions: int = 0
    withheld: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "isokron_version": __version__,
            "workspace_id": self.workspace_id,
            "generated_at": self.generated_at,
            "sources": self.sources,
            "ok": sum(1 for s in self.sources if s["status"] == "ok"),
            "failed": sum(1 for s in self.sources if s["status"] == "failed"),
            "redactions": self.redactions,
            "withheld": self.withheld,
        }


def _safe_text(text: str, report: BundleReport) -> tuple[str, bool]:
    """Redact ``text``; if the guard still finds a credential shape, withhold it entirely."""
    cleaned = redact(text)
    report.redactions += cleaned.count(REDACTED) - text.count(REDACTED)
    leftovers = find_credentials(cleaned)
    if leftovers:
        report.withheld += 1
        shapes = sorted({name for name, _ in leftovers})
        note = f"credential shapes remained after redaction: {shapes}"
        return json.dumps({"withheld": note}), True
    return cleaned, False


async def build_bundle(
    ctx: panels.PanelContext, sources: Mapping[str, Source] | None = None
) -> tuple[bytes, BundleReport]:
    """The zip bytes and its report. Never raises because of a source."""
    chosen = allowlisted_sources() if sources is None else dict(sources)
    report = BundleReport(workspace_id=ctx.workspace_id, generated_at=datetime.now(UTC).isoformat())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, source in chosen.items():
            entry: dict[str, Any] = {"name": name, "file": f"sources/{name}.json"}
            try:
                data = await source(ctx)
                text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
                entry["status"] = "ok"
            except Exception as exc:  # noqa: BLE001 — isolation is the point: any failure is reported
                text = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
                entry["status"] = "failed"
                entry["error"] = redact(f"{type(exc).__name__}: {exc}")
                log.warning(
                    "[isokron.console.diag.source_failed] source=%s error=%s",
                    name,
                    type(exc).__name__,
                )
            safe, withheld = _safe_text(text, report)
            entry["withheld"] = withheld
            entry["bytes"] = len(safe.encode("utf-8"))
            zf.writestr(entry["file"], safe)
            report.sources.append(entry)
        manifest, _ = _safe_text(json.dumps(report.to_dict(), indent=2), report)
        zf.writestr("manifest.json", manifest)
        zf.writestr("README.txt", README_TEXT)
    log.info(
        "[isokron.console.diag.bundle] workspace=%s sources=%d failed=%d redactions=%d",
        ctx.workspace_id,
        len(report.sources),
        report.to_dict()["failed"],
        report.redactions,
    )
    return buf.getvalue(), report


README_TEXT = """IsoKron console diagnostics bundle.

manifest.json   which sources were collected, which failed (and why), how many values were
                redacted, and which files were withheld by the credential-safety guard.
sources/*.json  one file per allowlisted source: the data of the console panel of that name.

Credential-shaped strings (wsk_ service tokens, Slack tokens, sk- keys, JSON password fields,
DSN passwords, PEM keys) were replaced by [REDACTED] before anything was written.
"""
