"""Bad input to the operator CLI: generated workspace ids, policy keys and values, capability
names, ids, decisions, tokens and DSNs. Every invocation ends with exit 0, or exit 1 with ONE
line ``error: …`` on stderr, or exit 2 (a usage error, reported by Typer) — never a traceback,
never an uncaught exception.

Arguments include what a shell can hand a program: any text without NUL, and undecodable bytes
(which Python passes on as lone surrogates, ``surrogateescape``). Generated DSNs never name a
reachable host: they are malformed, or point at 127.0.0.1 on a port nothing listens on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import Figures, scaled
from typer.testing import CliRunner, Result

from isokron.cli.main import app
from isokron.substrate.dsn import SubstrateDSNs

SECTION = "fuzz"
EXAMPLES = scaled(25)
CLEAN_ENV: dict[str, str | None] = {
    "ISOKRON_DSN": None,
    "ISOKRON_READER_DSN": None,
    "ISOKRON_GATEWAY_DSN": None,
    "ISOKRON_DATA_DIR": None,
    "ISOKRON_LOG_LEVEL": None,
}

shell_text = st.text(st.characters(blacklist_characters="\x00"), max_size=40)
undecodable = st.binary(min_size=1, max_size=12).map(
    lambda b: b.decode("utf-8", "surrogateescape").replace("\x00", "")
)
argument = (
    shell_text
    | undecodable
    | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
    | st.sampled_from(["-", "--", "--json", "-x", "x" * 300, "ws with spaces", "ünïcødé", "🦜"])
).filter(lambda s: s != "")
policy_key = (
    st.sampled_from(["policy.kora_disabled", "policy.kora_rate_limit_per_minute", "policy.new_one"])
    | argument
)
json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
).map(json.dumps)
policy_value = json_text | argument
ids = st.uuids().map(str) | argument
bad_dsn = (
    st.builds(
        lambda scheme, user, host, port, db: f"{scheme}://{user}@{host}:{port}/{db}",
        st.sampled_from(["postgresql", "postgres", "mysql", "http", "", "postgresql+asyncpg"]),
        st.sampled_from(["postgres", "", "ü", "a:b", "@"]),
        st.sampled_from(["127.0.0.1", "[::1]", "localhost", "[::1"]),
        st.sampled_from(["1", "0", "99999", "abc", "-5", "65536"]),
        st.sampled_from(["x", "", "a/b", "%zz", "?", "db?sslmode=bogus"]),
    )
    | argument
)


@pytest.fixture(scope="module")
def workspace(substrate: SubstrateDSNs) -> str:
    ws_id = f"clifuzz-{uuid4().hex[:8]}"
    result = _invoke(["workspace", "create", ws_id, "--dsn", substrate.admin])
    assert result.exit_code == 0, result.output
    return ws_id


def _invoke(argv: list[str]) -> Result:
    return CliRunner(env=CLEAN_ENV).invoke(app, argv)


def _check_clean(argv: list[str], result: Result) -> None:
    shown = f"isokron {argv!r} -> exit {result.exit_code}\n{result.output[-2000:]}"
    assert result.exit_code in (0, 1, 2), shown
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{shown}\nuncaught {result.exception!r}"
    )
    assert "Traceback" not in result.output, shown
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), shown
    if result.exit_code == 2:
        assert "Usage:" in result.stderr or "Error" in result.stderr, shown


COMMANDS: dict[str, Callable[[str, str], st.SearchStrategy[list[str]]]] = {
    "workspace create": lambda ws, dsn: st.builds(
        lambda w, name: [
            "workspace",
            "create",
            w,
            *(["--name", name] if name else []),
            "--dsn",
            dsn,
        ],
        argument,
        st.none() | argument,
    ),
    "policy set": lambda ws, dsn: st.builds(
        lambda k, v: ["policy", "set", ws, k, v, "--dsn", dsn], policy_key, policy_value
    ),
    "capability set": lambda ws, dsn: st.builds(
        lambda c, k, g: ["capability", "set", ws, c, k, g, "--dsn", dsn],
        st.sampled_from(["cap_iso_node_create", "cap_new_one"]) | argument,
        st.sampled_from(["kora", "critic", "nobody"]) | argument,
        st.sampled_from(["--grant", "--deny"]),
    ),
    "decide": lambda ws, dsn: st.builds(
        lambda what, i, d: [what, "decide", ws, i, d, "--dsn", dsn],
        st.sampled_from(["proposal", "escalation"]),
        ids,
        st.sampled_from(["accept", "reject", "approve", "approved"]) | argument,
    ),
    "workspace commands": lambda ws, dsn: st.builds(
        lambda cmd, w: [*cmd, w, "--dsn", dsn],
        st.sampled_from(
            [["verify"], ["checkpoint"], ["charter", "show"], ["token", "list"], ["policy", "list"]]
        ),
        argument | st.just(ws),
    ),
    "token revoke": lambda ws, dsn: st.builds(
        lambda t: ["token", "revoke", ws, t, "--dsn", dsn],
        st.sampled_from(["wsk_12345678", "wsk_" + "A" * 40]) | ids,
    ),
    "dsn": lambda ws, dsn: st.builds(
        lambda cmd, d: [*cmd, "--dsn", d],
        st.sampled_from([["workspace", "list"], ["verify", ws], ["policy", "list", ws]]),
        bad_dsn,
    ),
}


@pytest.mark.parametrize("family", sorted(COMMANDS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_the_cli_fails_cleanly_on_generated_input(
    family: str, data: st.DataObject, workspace: str, substrate: SubstrateDSNs, figures: Figures
) -> None:
    argv = data.draw(COMMANDS[family](workspace, substrate.admin), label="argv")
    figures.add(SECTION, "CLI fuzz cases run")
    figures.add(SECTION, "CLI fuzz failures", 0)
    result = _invoke(argv)
    figures.add(SECTION, f"CLI exit {result.exit_code}")
    try:
        _check_clean(argv, result)
    except AssertionError:
        figures.add(SECTION, "CLI fuzz failures")
        raise
