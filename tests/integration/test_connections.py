"""How Nexus's connections present themselves to the database, and the settings they carry."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from nexus_ingest.db import open_pool


async def _setting(url: str, setting: str, **pool_options: Any) -> str:
    """`SHOW setting` on a connection of a pool opened with `pool_options`."""
    pool = await open_pool(url, min_size=1, max_size=1, **pool_options)
    try:
        await pool.wait(timeout=10)
        async with pool.connection() as conn:
            row = await (await conn.execute(f"SHOW {setting}")).fetchone()
    finally:
        await pool.close()
    assert row is not None
    return str(row[0])


async def test_a_pool_names_its_connections_after_the_part_of_nexus_using_it(db_url: str) -> None:
    name = await _setting(db_url, "application_name", application_name="nexus worker")
    assert name == "nexus worker"


async def test_a_name_the_user_gave_is_kept(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An `application_name` in DATABASE_URL, or in libpq's PGAPPNAME, wins over Nexus's."""
    in_url = make_conninfo(db_url, application_name="crm-sync")
    assert await _setting(in_url, "application_name", application_name="nexus worker") == (
        "crm-sync"
    )
    monkeypatch.setenv("PGAPPNAME", "from-env")
    assert await _setting(db_url, "application_name", application_name="nexus worker") == (
        "from-env"
    )


@pytest.mark.parametrize("synchronous", [True, False])
async def test_worker_commits_wait_for_the_disk_only_when_asked(
    db_url: str, synchronous: bool
) -> None:
    """The worker's sessions commit without waiting for the WAL flush unless configured to wait."""
    setting = await _setting(db_url, "synchronous_commit", synchronous_commit=synchronous)
    assert setting == ("on" if synchronous else "off")
