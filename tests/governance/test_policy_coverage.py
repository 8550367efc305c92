"""Every seeded policy has a test that changes it and observes its effect (issue 10).

Such a test carries ``@pytest.mark.policy_effect("policy.<key>")``; this test fails for a key of
the catalogue that no test marks, and for a mark naming a key the catalogue does not have."""

from __future__ import annotations

import re
from pathlib import Path

from isokron.governance.policies import POLICIES

TESTS = Path(__file__).resolve().parents[1]
MARK = re.compile(r"""policy_effect\(\s*["'](policy\.[a-z0-9_.]+)["']""")


def marked_keys() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        for key in MARK.findall(path.read_text(encoding="utf-8")):
            found.setdefault(key, []).append(path.relative_to(TESTS).as_posix())
    return found


def test_every_default_policy_has_an_effect_test() -> None:
    marked = marked_keys()
    missing = sorted(set(POLICIES) - set(marked))
    assert missing == [], f"policies without a test of their effect: {missing}"
    unknown = sorted(set(marked) - set(POLICIES))
    assert unknown == [], f"effect tests for keys the catalogue does not have: {unknown}"
    print(
        f"\n{len(POLICIES)} policies, each with an effect test: "
        f"{sum(len(v) for v in marked.values())} marks in "
        f"{len({p for v in marked.values() for p in v})} modules"
    )
