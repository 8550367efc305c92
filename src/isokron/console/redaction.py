"""Shape-based credential redaction for everything the console hands out (seed 001).

The guard matches the *shapes* of real credentials, never bare substrings: ``wsk_`` followed by
at least 16 letters or digits, real Slack token shapes, ``sk-`` followed by at least 20
characters, a JSON password-like field that has a value, and a DSN's password. Operator copy
that merely names a token family ("wsk_* token valid", "Token rotation — wsk_*") has no such
shape and is left alone. On top of these, the default constitution's secret shapes (PEM keys,
cloud keys; :func:`isokron.governance.redaction.redact_secrets`) are applied.
"""

from __future__ import annotations

import re

from isokron.governance.redaction import redact_secrets

REDACTED = "[REDACTED]"

#: name -> pattern. Each matches one whole credential (group ``v``, when present, is the part
#: replaced; otherwise the whole match is).
CREDENTIAL_SHAPES: dict[str, re.Pattern[str]] = {
    "isokron_service_token": re.compile(r"wsk_[A-Za-z0-9]{16,}"),
    "slack_token": re.compile(r"\bxox[abposr]-\d{6,}-[0-9A-Za-z-]{8,}"),
    "slack_app_token": re.compile(r"\bxapp-\d-[A-Z0-9]{6,}-\d{6,}-[a-f0-9]{16,}"),
    "slack_webhook": re.compile(
        r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"
    ),
    "sk_api_key": re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),
    # A JSON field, also when the JSON sits escaped inside another JSON string (\"key\": \"v\").
    "json_password_field": re.compile(
        r'(?P<q>\\?)"[A-Za-z0-9_-]*(?:password|passwd|secret|api[_-]?key)(?P=q)"\s*:\s*'
        r'(?P=q)"(?P<v>(?:(?!(?P=q)")[^"\n])+)(?P=q)"',
        re.IGNORECASE,
    ),
    "dsn_password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^:/@\s]+:(?P<v>[^@\s/]+)@"),
}


def _replace(match: re.Match[str]) -> str:
    if "v" in match.re.groupindex and match.group("v") is not None:
        start, end = match.span("v")
        whole = match.group(0)
        base = match.start(0)
        value = match.group("v")
        if value == REDACTED:
            return whole
        return whole[: start - base] + REDACTED + whole[end - base :]
    return REDACTED


def redact(text: str) -> str:
    """``text`` with every credential-shaped substring replaced by ``[REDACTED]``."""
    for pattern in CREDENTIAL_SHAPES.values():
        text = pattern.sub(_replace, text)
    return redact_secrets(text)


def find_credentials(text: str) -> list[tuple[str, str]]:
    """(shape name, matched text) for every credential shape still present in ``text``."""
    found: list[tuple[str, str]] = []
    for name, pattern in CREDENTIAL_SHAPES.items():
        for match in pattern.finditer(text):
            value = match.group("v") if "v" in pattern.groupindex else match.group(0)
            if value != REDACTED:
                found.append((name, match.group(0)))
    return found
