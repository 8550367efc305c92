"""The credential-safety guard matches shapes, not substrings (seed 001)."""

from __future__ import annotations

import json

from isokron.console.redaction import REDACTED, find_credentials, redact
from isokron.substrate.writes import new_token

REAL_SHAPES = {
    "wsk service token": new_token(),
    "wsk minimum shape": "wsk_" + "A1b2C3d4E5f6G7h8",
    "slack bot token": "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx",
    "slack user token": "xoxp-"
    + "123456789012-123456789012-123456789012-"
    + "0123456789abcdef0123456789abcdef",
    "slack app token": "xapp-1-"
    + "A012BCDEFGH-1234567890123-"
    + "0123456789abcdef0123456789abcdef",
    "sk- api key": "sk-" + "A" * 20,
    "sk-proj key": "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0k1L2",
}
OPERATOR_COPY = [
    "wsk_* token valid",
    "Token rotation — wsk_*",
    "tokens look like wsk_ followed by 40 characters",
    "a short wsk_abc is not a token",
    "sk-short",
    "the slack xoxb- prefix marks bot tokens",
    '{"password_hint": ""}',
    "set a password in the config",
]


def test_every_real_shape_is_redacted_and_operator_copy_survives() -> None:
    caught = 0
    for name, secret in REAL_SHAPES.items():
        text = f"note before {secret} note after"
        cleaned = redact(text)
        assert secret not in cleaned, name
        assert REDACTED in cleaned and "note before" in cleaned and "note after" in cleaned
        assert find_credentials(text), name
        assert not find_credentials(cleaned), name
        caught += 1
    survived = 0
    for copy in OPERATOR_COPY:
        assert redact(copy) == copy, copy
        assert not find_credentials(copy), copy
        survived += 1
    print(
        f"\nredaction: {caught}/{len(REAL_SHAPES)} real shapes caught, "
        f"{survived}/{len(OPERATOR_COPY)} operator copy lines untouched"
    )


def test_json_password_fields_lose_their_value_not_their_key() -> None:
    doc = json.dumps({"db_password": "hunter2-Correct", "api_key": "abc123xyz", "user": "kora"})
    cleaned = redact(doc)
    assert "hunter2-Correct" not in cleaned and "abc123xyz" not in cleaned
    parsed = json.loads(cleaned)
    assert parsed == {"db_password": REDACTED, "api_key": REDACTED, "user": "kora"}
    assert redact(cleaned) == cleaned  # idempotent: a redacted field is not a credential


def test_dsn_passwords_are_redacted_and_the_rest_kept() -> None:
    cleaned = redact("dsn postgresql://app:S3cretPassw0rd@db.internal:5432/app ok")
    assert "S3cretPassw0rd" not in cleaned
    assert "postgresql://app:[REDACTED]@db.internal:5432/app ok" in cleaned
    assert redact("postgresql://app@db:5432/app") == "postgresql://app@db:5432/app"


def test_password_fields_inside_escaped_json_are_redacted() -> None:
    inner = json.dumps({"note": 'cfg {"db_password": "hunter2-Correct"} end'})
    cleaned = redact(inner)
    assert "hunter2-Correct" not in cleaned
    assert json.loads(cleaned)["note"] == 'cfg {"db_password": "[REDACTED]"} end'
