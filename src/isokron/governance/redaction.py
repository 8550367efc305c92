"""The secret redactor: token-shaped text in log lines, denial events and diagnostics.

The shapes are the default constitution's secret deny patterns (:mod:`isokron.governance.seeds`)
plus a whole PEM private-key block; a constitution adds its own deny patterns
(:meth:`isokron.governance.rules.Constitution.redact`). Whole secrets are replaced, no prefix
is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

from isokron.governance.patterns import REDACTED, Scanner, build_scanner, unique_patterns
from isokron.governance.seeds import DEFAULT_CONSTITUTION_RULES

__all__ = ["REDACTED", "redact_secrets", "redactor_with"]

# The whole armoured block is redacted when its end is present, not just the header line.
_PEM_BLOCK_PATTERN = (
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
)


@cache
def default_redaction_patterns() -> tuple[re.Pattern[str], ...]:
    """The whole-PEM-block pattern, then the default constitution's deny content patterns.

    The block comes first so that, folded into one alternation, it wins over the bare
    BEGIN-line pattern at the same position.
    """
    shapes = [
        re.compile(rule["match"]["content_pattern"])
        for rule in DEFAULT_CONSTITUTION_RULES["rules"]
        if rule["effect"] == "deny" and "content_pattern" in rule["match"]
    ]
    return (re.compile(_PEM_BLOCK_PATTERN), *shapes)


def redactor_with(extra: Iterable[re.Pattern[str]]) -> Scanner:
    """A redactor for the default shapes plus ``extra`` patterns (a constitution's)."""
    return build_scanner(unique_patterns([*default_redaction_patterns(), *extra]))


@cache
def _default_redactor() -> Scanner:
    return build_scanner(default_redaction_patterns())


def redact_secrets(text: str, redactor: Scanner | None = None) -> str:
    """Replace every token-shaped substring of ``text`` with ``[REDACTED]``.

    Uses the secret shapes of the default constitution, or ``redactor`` when given (see
    :func:`redactor_with`). A PEM private key block is redacted from its BEGIN to its END line.
    """
    return (redactor or _default_redactor()).redact(text)
