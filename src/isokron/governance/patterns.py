"""Many regular expressions folded into few: one pass per string answers "does any match?".

Used by the constitution's rules engine (:mod:`isokron.governance.rules`) to screen every
write, and by the secret redactor (:mod:`isokron.governance.redaction`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

REDACTED = "[REDACTED]"

# Leading global inline flags such as "(?i)". They must be lifted out of a pattern before it
# can sit inside an alternation (Python rejects global flags that are not at the very start).
_LEADING_FLAGS_RE = re.compile(r"^\(\?[aiLmsux]+\)")
# Backreferences and conditionals depend on group numbering, which folding would shift.
_NUMBERED_GROUP_USE_RE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")


@dataclass(frozen=True)
class Scanner:
    """Alternations that tell, in one pass per string, whether any of a set of patterns matches.

    ``passes`` holds (compiled alternation, shortest possible match) pairs: one per distinct
    set of regex flags, plus one per pattern that cannot be folded (backreferences, clashing
    group names).
    """

    passes: tuple[tuple[re.Pattern[str], int], ...]

    def any_match(self, strings: Sequence[str]) -> bool:
        """True when some pattern matches some string."""
        for regex, shortest in self.passes:
            search = regex.search
            for s in strings:
                if len(s) >= shortest and search(s) is not None:
                    return True
        return False

    def redact(self, text: str) -> str:
        """Replace every match of every pattern in ``text`` with ``[REDACTED]``."""
        for regex, _shortest in self.passes:
            text = regex.sub(REDACTED, text)
        return text


def _min_width(pattern: str, flags: int) -> int:
    """The fewest characters any match of ``pattern`` consumes, or 0 when unknown.

    Skipping strings shorter than this is safe: lookarounds and anchors consume nothing, so a
    string shorter than the minimum width cannot contain a match. ``re._parser`` is private, so
    any surprise from it only disables the optimization.
    """
    try:
        from re import _parser  # type: ignore[attr-defined]

        low = int(_parser.parse(pattern, flags).getwidth()[0])
    except (ImportError, AttributeError, TypeError, ValueError, IndexError, re.error):
        return 0
    return max(0, min(low, 1 << 20))


def _lift_flags(pattern: str) -> str:
    """Strip leading global inline flags (their effect is carried by the compiled flags)."""
    while True:
        lifted = _LEADING_FLAGS_RE.sub("", pattern, count=1)
        if lifted == pattern:
            return pattern
        pattern = lifted


def build_scanner(patterns: Iterable[re.Pattern[str]]) -> Scanner:
    """Fold compiled patterns into as few alternations as their flags allow."""
    by_flags: dict[int, list[str]] = {}
    alone: list[re.Pattern[str]] = []
    for compiled in patterns:
        if _NUMBERED_GROUP_USE_RE.search(compiled.pattern):
            alone.append(compiled)
        else:
            by_flags.setdefault(compiled.flags, []).append(_lift_flags(compiled.pattern))
    passes: list[tuple[re.Pattern[str], int]] = []
    for flags, bodies in by_flags.items():
        # In verbose mode a trailing comment would swallow the closing parenthesis.
        end = "\n" if flags & re.VERBOSE else ""
        combined = "|".join(f"(?:{body}{end})" for body in bodies)
        try:
            passes.append((re.compile(combined, flags), _min_width(combined, flags)))
        except re.error:
            # e.g. two rules use the same named group: scan those patterns one by one.
            for body in bodies:
                passes.append((re.compile(body, flags), _min_width(body, flags)))
    for compiled in alone:
        passes.append((compiled, _min_width(compiled.pattern, compiled.flags)))
    return Scanner(tuple(passes))


def unique_patterns(patterns: Iterable[re.Pattern[str]]) -> list[re.Pattern[str]]:
    """Drop repeated patterns (a constitution usually repeats the default secret shapes)."""
    unique: dict[tuple[str, int], re.Pattern[str]] = {}
    for compiled in patterns:
        unique.setdefault((compiled.pattern, compiled.flags), compiled)
    return list(unique.values())
