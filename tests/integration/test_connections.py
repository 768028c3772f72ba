"""How Nexus's connections present themselves to the database, and the settings they carry."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from nexus_ingest.db import open_pool
from tests.partition import partition_proxy


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


async def _client_keepalive(url: str) -> tuple[int, int]:
    """SO_KEEPALIVE and TCP_KEEPIDLE on the client side of a pooled connection to `url`."""
    pool = await open_pool(url, min_size=1, max_size=1)
    try:
        await pool.wait(timeout=10)
        async with pool.connection() as conn:
            with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
                return (
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                )
    finally:
        await pool.close()


async def test_a_connection_over_tcp_probes_a_silent_server_within_a_minute(db_url: str) -> None:
    """A server gone without a reset is found out by TCP keepalives after 30 s idle, not after
    the kernel's default two hours; keepalive settings in DATABASE_URL are the user's own."""
    with partition_proxy(db_url) as proxy:  # only as a TCP path to the server
        over_tcp = proxy.url(db_url)
        assert await _client_keepalive(over_tcp) == (1, 30)
        assert await _client_keepalive(make_conninfo(over_tcp, keepalives_idle=90)) == (1, 90)
