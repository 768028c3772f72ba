"""Clients that send too much, or too slowly, over raw sockets on loopback to `nexus serve`:
a huge header, a body that stalls or trickles or is cut off by a hang-up, headers that never end."""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    SEED_CONVERSATION,
    free_port,
    nexus_env,
    nexus_process,
    wait_for,
    wait_healthy,
)

REQUEST_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 16 * 1024
HUGE_HEADER_BYTES = 4 * 2**20  # far past the limit; never sent whole when the server is bounded
CHUNK = 64 * 1024
ANSWER_WITHIN_S = 10.0  # generous: the server should answer about REQUEST_TIMEOUT_S after


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's `nexus serve` writes its log."""
    return tmp_path_factory.mktemp("slow-clients") / "serve.log"


@pytest.fixture(scope="module")
def server(pg_admin_url: str, template_db: str, server_log: Path) -> Iterator[tuple[str, int]]:
    """A `nexus serve` with a short request timeout, a small header limit and the dashboard on."""
    import psycopg
    from psycopg import sql

    name = f"nexus_slow_{free_port()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    port = free_port()
    env = nexus_env(
        psycopg.conninfo.make_conninfo(pg_admin_url, dbname=name),
        port,
        NEXUS_EXTRACTOR="rules",
        NEXUS_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
        NEXUS_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        NEXUS_ADMIN_TOKEN="slow-clients-admin",
    )
    try:
        with nexus_process(["serve"], env, log_path=server_log) as proc:
            wait_healthy(f"http://127.0.0.1:{port}", proc)
            yield "127.0.0.1", port
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=ANSWER_WITHIN_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def answer(sock: socket.socket) -> bytes:
    """What the server sends before closing or going quiet for ANSWER_WITHIN_S; b"" if nothing."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def still_serving(address: tuple[str, int]) -> bool:
    host, port = address
    response = httpx.post(f"http://{host}:{port}/api/nexus/producer", json=SEED_CONVERSATION)
    return response.status_code == 202


def test_headers_past_the_limit_in_one_write_are_refused_with_431(
    server: tuple[str, int],
) -> None:
    """Headers over 32 KiB that arrive whole, with their blank line, in one read are refused too
    (the parser would otherwise have finished them before their size was looked at)."""
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: nexus\r\nX-Big: "
        + b"a" * 40_000
        + b"\r\nConnection: close\r\n\r\n"
    )
    with closing(connect(server)) as sock:
        sock.sendall(request)
        reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:80]
    assert still_serving(server)


def test_a_huge_header_is_refused_with_431_before_it_is_read_whole(
    server: tuple[str, int],
) -> None:
    """A header growing past the limit gets 431 (and a closed connection) after a few chunks."""
    with closing(connect(server)) as sock:
        sock.sendall(b"POST /api/nexus/producer HTTP/1.1\r\nHost: nexus\r\nX-Big: ")
        sent, refused = 0, False
        while sent < HUGE_HEADER_BYTES and not refused:
            try:
                sock.sendall(b"a" * CHUNK)
            except (BrokenPipeError, ConnectionResetError):
                refused = True
                break
            sent += CHUNK
            # A short pause per chunk lets the server's answer overtake what the kernel buffers.
            refused = bool(select.select([sock], [], [], 0.05)[0])
        reply = answer(sock)
    assert refused, f"the server read all {sent} bytes of a header without refusing it"
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431"), reply[:80]
    assert sent < HUGE_HEADER_BYTES // 4
    assert still_serving(server)


def test_a_stalled_body_gets_408(server: tuple[str, int]) -> None:
    """A body that stops halfway is answered 408 after the request timeout, not held open."""
    with closing(connect(server)) as sock:
        sock.sendall(
            b"POST /api/nexus/producer HTTP/1.1\r\nHost: nexus\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"messages": ['
        )
        started = time.monotonic()
        reply = answer(sock)
        waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    assert waited < ANSWER_WITHIN_S
    assert still_serving(server)


def test_a_trickled_body_gets_408(server: tuple[str, int]) -> None:
    """A body sent a byte at a time, each in time, still gets 408 once the whole takes too long."""
    body = b'{"messages": [], "fingerprint": "f", "sessionId": "s"}'
    with closing(connect(server)) as sock:
        sock.sendall(
            b"POST /api/nexus/producer HTTP/1.1\r\nHost: nexus\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        reply = b""
        for byte in body:
            if select.select([sock], [], [], 0.25)[0]:
                reply = answer(sock)
                break
            sock.sendall(bytes([byte]))
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]


def test_headers_that_never_end_are_cut_off(server: tuple[str, int]) -> None:
    """A request whose headers stop coming gets 408 and a closed connection."""
    with closing(connect(server)) as sock:
        sock.sendall(b"GET /api/nexus/producer HTTP/1.1\r\nHost: nexus\r\nX-Slow: ")
        started = time.monotonic()
        reply = answer(sock)
        waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    assert waited < ANSWER_WITHIN_S


def test_an_ordinary_large_body_still_arrives(server: tuple[str, int]) -> None:
    """A 200 KB snapshot sent at loopback speed is accepted as before."""
    host, port = server
    messages = [{"role": "user", "content": "x" * 7000} for _ in range(28)]
    response = httpx.post(
        f"http://{host}:{port}/api/nexus/producer",
        json={**SEED_CONVERSATION, "messages": messages},
    )
    assert response.status_code == 202, response.text


def answered_by_status(address: tuple[str, int], route: str) -> dict[str, float]:
    """How many requests to `route` the server has answered, by status, as /metrics counts them."""
    host, port = address
    exposition = httpx.get(f"http://{host}:{port}/metrics").text
    pattern = (
        r'^nexus_http_request_duration_seconds_count\{[^}]*route="' + re.escape(route) + r'"'
        r'[^}]*status="(\d+)"[^}]*\} ([0-9.e+]+)$'
    )
    return {m[1]: float(m[2]) for m in re.finditer(pattern, exposition, re.M)}


@pytest.mark.parametrize(
    ("path", "content_type", "partial_body"),
    [
        ("/api/nexus/producer", "application/json", b'{"mess'),
        ("/dashboard/login", "application/x-www-form-urlencoded", b"token=sl"),
    ],
)
def test_a_client_that_hangs_up_mid_body_is_let_go_quietly(
    server: tuple[str, int], server_log: Path, path: str, content_type: str, partial_body: bytes
) -> None:
    """A client that closes its connection halfway through the body it announced is no server
    error: nothing is logged as a crash, and /metrics counts it as a hang-up (499), neither a
    500 nor the 408 of a client too slow."""
    before = answered_by_status(server, path)
    log_start = server_log.stat().st_size
    with closing(connect(server)) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: nexus\r\nContent-Type: {content_type}\r\n".encode()
            + b"Content-Length: 100\r\n\r\n"
            + partial_body
        )

    def counted_since() -> dict[str, float] | None:
        now = answered_by_status(server, path)
        return now if sum(now.values()) > sum(before.values()) else None

    after = wait_for(
        counted_since,
        timeout=ANSWER_WITHIN_S,
        what=f"the server to finish with the cut-off request to {path}",
    )
    assert after.get("500", 0) == before.get("500", 0), after
    assert after.get("408", 0) == before.get("408", 0), after
    assert after.get("499", 0) == before.get("499", 0) + 1, after
    with server_log.open("rb") as log:
        log.seek(log_start)
        written = log.read().decode("utf-8", "replace")
    assert "Traceback" not in written and "Exception in ASGI application" not in written, written
    assert still_serving(server)
