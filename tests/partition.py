"""A proxy on loopback in front of Postgres that can cut its open connections off silently.

After `cut()`, bytes on every connection open at that moment are dropped both ways while both
sockets stay open: no reset, no close, as when a network path or a failed-over primary vanishes
without a word. A client waiting for an answer on such a connection waits for ever unless it
gives up by itself. Connections opened later pass, as they reach a new primary after a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import psycopg


class _Pipe:
    """One client connection and its server side."""

    def __init__(self) -> None:
        self.cut = False
        self.writers: list[asyncio.StreamWriter] = []


class PartitionProxy:
    """Forwards 127.0.0.1:<port> to the server `target_url` points at (TCP or a Unix socket)."""

    def __init__(self, target_url: str) -> None:
        self._target = psycopg.conninfo.conninfo_to_dict(target_url)
        self._pipes: list[_Pipe] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def url(self, database_url: str) -> str:
        """`database_url`, through this proxy."""
        return psycopg.conninfo.make_conninfo(database_url, host="127.0.0.1", port=self.port)

    def cut(self) -> int:
        """Silence every connection open now; how many there were."""

        def mark() -> int:
            for pipe in self._pipes:
                pipe.cut = True
            return len(self._pipes)

        return self._call(mark)

    def open_connections(self) -> int:
        """Connections made through the proxy so far, cut or not, that are still open."""
        return self._call(lambda: sum(1 for p in self._pipes if p.writers))

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        async def close_all() -> None:
            assert self._server is not None
            self._server.close()
            for pipe in self._pipes:
                for writer in pipe.writers:
                    writer.close()
            pumps = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _call(self, function: object) -> int:
        done: Future[int] = Future()

        def run() -> None:
            done.set_result(function())  # type: ignore[operator]

        self._loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    async def _open_server(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host = str(self._target.get("host") or "/tmp")
        port = int(self._target.get("port") or 5432)
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        pipe = _Pipe()
        self._pipes.append(pipe)
        try:
            server_r, server_w = await self._open_server()
        except OSError:
            client_w.close()
            return
        pipe.writers = [client_w, server_w]
        await asyncio.gather(
            self._pump(client_r, server_w, pipe),
            self._pump(server_r, client_w, pipe),
            return_exceptions=True,
        )
        for writer in pipe.writers:
            writer.close()
        pipe.writers = []

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe
    ) -> None:
        while data := await reader.read(65536):
            if pipe.cut:
                continue  # dropped on the floor; the sender never learns
            writer.write(data)
            await writer.drain()
        # One side closed: a connection that is not cut passes the close on.
        if not pipe.cut:
            with contextlib.suppress(OSError):
                writer.close()


@contextmanager
def partition_proxy(target_url: str) -> Iterator[PartitionProxy]:
    proxy = PartitionProxy(target_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
