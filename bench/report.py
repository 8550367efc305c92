"""What every benchmark returns, and how a run is printed and saved.

A benchmark returns a :class:`Section`: rows for the table (a figure, its unit, and the
baseline it is set beside), targets with met / not met, and the raw data for the JSON file.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One figure of the table, optionally beside its baseline."""

    label: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """value / baseline, when there is a baseline."""
        if self.baseline is None or not self.baseline or math.isnan(self.baseline):
            return None
        return self.value / self.baseline


@dataclass
class Target:
    """A target of issue 5: what was measured against what was required."""

    name: str
    measured: str
    required: str
    met: bool | None  # None: could not be measured in this run
    note: str = ""


@dataclass
class Section:
    """The outcome of one benchmark module."""

    name: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


def fmt(value: float | None) -> str:
    """A number with a sensible count of significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 0.1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def _status(met: bool | None) -> str:
    return {True: "MET", False: "NOT MET", None: "not measured"}[met]


def render_table(sections: list[Section]) -> str:
    """The human-readable report: one table of figures, then the targets."""
    lines: list[str] = []
    header = f"{'benchmark':<58} {'value':>12} {'unit':<8} {'baseline':>12} {'ratio':>7}"
    for section in sections:
        lines.append("")
        lines.append(f"== {section.name} ({section.seconds:.0f} s)")
        if section.error:
            lines.append(f"   ERROR: {section.error}")
        if section.rows:
            lines.append(header)
        for row in section.rows:
            ratio = row.ratio
            lines.append(
                f"{row.label[:58]:<58} {fmt(row.value):>12} {row.unit:<8} "
                f"{fmt(row.baseline):>12} {('x' + fmt(ratio)) if ratio is not None else '':>7}"
            )
            if row.baseline_label or row.note:
                extra = "; ".join(
                    x
                    for x in (row.baseline_label and f"baseline: {row.baseline_label}", row.note)
                    if x
                )
                lines.append(f"   {extra}")
    lines.append("")
    lines.append("== targets")
    for section in sections:
        for t in section.targets:
            lines.append(f"[{_status(t.met):^12}] {t.name}: {t.measured} (required {t.required})")
            if t.note:
                lines.append(f"               {t.note}")
    return "\n".join(lines)


def render_markdown(sections: list[Section]) -> str:
    """The same figures as Markdown tables (pasted into docs/benchmarks.md)."""
    out: list[str] = []
    for section in sections:
        out.append(f"### {section.name}\n")
        if section.error:
            out.append(f"Error: {section.error}\n")
        if section.rows:
            out.append("| benchmark | value | unit | baseline | ratio |")
            out.append("|---|---:|---|---:|---:|")
            for row in section.rows:
                ratio = row.ratio
                base = fmt(row.baseline) if row.baseline is not None else ""
                if row.baseline_label:
                    base = f"{base} ({row.baseline_label})"
                label = row.label + (f" — {row.note}" if row.note else "")
                out.append(
                    f"| {label} | {fmt(row.value)} | {row.unit} | {base} | "
                    f"{('×' + fmt(ratio)) if ratio is not None else ''} |"
                )
            out.append("")
    out.append("### Targets\n")
    out.append("| target | measured | required | status |")
    out.append("|---|---|---|---|")
    for section in sections:
        for t in section.targets:
            out.append(f"| {t.name} | {t.measured} | {t.required} | {_status(t.met)} |")
    return "\n".join(out) + "\n"


def write_json(
    sections: list[Section], machine: dict[str, Any], command: str, started: datetime
) -> Path:
    """Save the run as ``bench/results/<timestamp>.json`` and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / (started.strftime("%Y%m%dT%H%M%SZ") + ".json")
    doc = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "command": command,
        "machine": machine,
        "python": platform.python_version(),
        "sections": [asdict(s) for s in sections],
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return path
