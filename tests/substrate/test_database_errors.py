"""The one error boundary: asyncpg and psycopg errors become IsoKron errors in one place, and
every SQLSTATE the migrations raise is mapped."""

from __future__ import annotations

import re
import socket

import asyncpg
import psycopg
import pytest

from isokron.errors import (
    ConflictError,
    NotFoundError,
    RefusalError,
    SubstrateError,
    SubstrateUnavailableError,
)
from isokron.substrate import connection
from isokron.substrate.database_errors import (
    POSTGRES_SQLSTATES,
    SUBSTRATE_SQLSTATES,
    translate,
    translate_connect_error,
)
from isokron.substrate.dsn import SubstrateDSNs
from isokron.substrate.migrate import migrations_dir

RAISED = re.compile(r"(?:ERRCODE\s*=\s*|isokron\.fail\(\s*)'([A-Z0-9]{5})'")
RAISE_SQL = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = 'probe {code}'; END $$"


def raised_sqlstates() -> set[str]:
    codes: set[str] = set()
    for path in migrations_dir().glob("*.sql"):
        codes.update(RAISED.findall(path.read_text(encoding="utf-8")))
    return codes


def test_every_sqlstate_the_migrations_raise_is_mapped() -> None:
    raised = raised_sqlstates()
    assert {"IKV01", "IKN01", "IKC01", "IKA01"} <= raised
    unmapped = sorted(
        c for c in raised if c not in SUBSTRATE_SQLSTATES and c not in POSTGRES_SQLSTATES
    )
    assert unmapped == [], f"SQLSTATEs raised by migrations but not translated: {unmapped}"
    print(f"\n{len(raised)} SQLSTATEs raised by the migrations, all mapped")


def _expect(translated: BaseException, code: str, sqlstate: str) -> None:
    if code == "not_found":
        assert isinstance(translated, NotFoundError)
    elif code == "conflict":
        assert isinstance(translated, ConflictError)
    else:
        assert isinstance(translated, RefusalError) and translated.code == code
    assert isinstance(translated, SubstrateError | RefusalError)
    assert f"probe {sqlstate}" in str(translated)


@pytest.mark.parametrize("sqlstate", sorted(SUBSTRATE_SQLSTATES))
async def test_both_drivers_translate_each_substrate_sqlstate(
    sqlstate: str, substrate: SubstrateDSNs
) -> None:
    code = SUBSTRATE_SQLSTATES[sqlstate]
    conn = await connection.connect(substrate.admin)
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute(RAISE_SQL.format(code=sqlstate))
    finally:
        await conn.close()
    _expect(translate(caught.value), code, sqlstate)
    with psycopg.connect(substrate.admin) as pconn, pytest.raises(psycopg.Error) as pcaught:
        pconn.execute(RAISE_SQL.format(code=sqlstate))
    _expect(translate(pcaught.value), code, sqlstate)


async def test_a_server_error_we_do_not_anticipate_keeps_its_sqlstate(
    substrate: SubstrateDSNs,
) -> None:
    conn = await connection.connect(substrate.admin)
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute("SELECT 1 / 0")
    finally:
        await conn.close()
    translated = translate(caught.value)
    assert type(translated) is SubstrateError and translated.sqlstate == "22012"
    with psycopg.connect(substrate.admin) as pconn, pytest.raises(psycopg.Error) as pcaught:
        pconn.execute("SELECT 1 / 0")
    translated = translate(pcaught.value)
    assert type(translated) is SubstrateError and translated.sqlstate == "22012"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_is_unavailable_for_both_drivers() -> None:
    dsn = f"postgresql://nobody@127.0.0.1:{_closed_port()}/none"
    with pytest.raises(OSError) as caught:
        await asyncpg.connect(dsn, timeout=5)
    assert isinstance(translate_connect_error(caught.value, dsn), SubstrateUnavailableError)
    with pytest.raises(psycopg.OperationalError) as pcaught:
        psycopg.connect(dsn, connect_timeout=5)
    translated = translate_connect_error(pcaught.value, dsn)
    assert isinstance(translated, SubstrateUnavailableError)
    assert isinstance(translate(pcaught.value), SubstrateUnavailableError)


def test_non_driver_exceptions_pass_through() -> None:
    error = ValueError("not ours")
    assert translate(error) is error
