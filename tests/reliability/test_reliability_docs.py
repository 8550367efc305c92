"""docs/security.md cannot drift: every test file and test it names exists, every invariant
has its row, and every reliability test module is named there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
PATH_RE = re.compile(r"`(tests/[a-z_]+/(?:test_[a-z_]+\.py|\*))")
SHORT_RE = re.compile(r"`(test_[a-z_]+\.py)(?:::(test_[a-z_]+))?`")


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def test_every_named_test_file_and_test_exists() -> None:
    text = _text()
    files = {p.name: p for p in ROOT.glob("tests/*/test_*.py")}
    for path in PATH_RE.findall(text):
        if path.endswith("*"):
            assert (ROOT / path[:-2]).is_dir(), path
        else:
            assert (ROOT / path).is_file(), path
    for name, test in SHORT_RE.findall(text):
        assert name in files, name
        if test:
            assert re.search(rf"def {test}\(", files[name].read_text()), f"{name}::{test}"


def test_every_invariant_has_a_row_and_every_reliability_module_is_named() -> None:
    text = _text()
    for n in range(1, 9):
        assert re.search(rf"^\| {n} \| \*\*", text, re.MULTILINE), f"invariant {n}"
    for module in sorted((ROOT / "tests" / "reliability").glob("test_reliability_*.py")):
        if module.name != Path(__file__).name:
            assert module.name in text, f"{module.name} is not described in docs/security.md"
