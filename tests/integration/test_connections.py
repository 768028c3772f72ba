"""How Nexus's connections present themselves to the database."""

from __future__ import annotations

import pytest
from psycopg.conninfo import make_conninfo

from nexus_ingest.db import open_pool


async def _application_name(url: str, name: str) -> str:
    pool = await open_pool(url, min_size=1, max_size=1, application_name=name)
    try:
        await pool.wait(timeout=10)
        async with pool.connection() as conn:
            row = await (await conn.execute("SHOW application_name")).fetchone()
    finally:
        await pool.close()
    assert row is not None
    return str(row[0])


async def test_a_pool_names_its_connections_after_the_part_of_nexus_using_it(db_url: str) -> None:
    assert await _application_name(db_url, "nexus worker") == "nexus worker"


async def test_a_name_the_user_gave_is_kept(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An `application_name` in DATABASE_URL, or in libpq's PGAPPNAME, wins over Nexus's."""
    in_url = make_conninfo(db_url, application_name="crm-sync")
    assert await _application_name(in_url, "nexus worker") == "crm-sync"
    monkeypatch.setenv("PGAPPNAME", "from-env")
    assert await _application_name(db_url, "nexus worker") == "from-env"
