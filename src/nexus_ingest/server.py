"""uvicorn's httptools protocol with bounds it lacks: the size of a request's headers, and the
time they may take to arrive. A client can no longer hold a connection open forever with
headers that never end, or fill memory with one that never stops."""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Refuses headers past `max_header_bytes` with 431, and headers slower than
    `header_timeout_s` with 408; either way the connection is closed."""

    max_header_bytes = 32 * 1024
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._awaiting_headers = True
        self._header_deadline: TimerHandle | None = None
        self._start_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Counted before parsing: headers that arrive whole in one read are parsed, and their
        # request started, within this call. Only up to the blank line that ends them, so a
        # chunk that also carries the body is not held against them.
        if self._awaiting_headers:
            end = data.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end + 4
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, "Request header fields too large.")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_deadline()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers, self._header_bytes = True, 0  # the next request starts afresh

    def _start_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self._awaiting_headers or (self.cycle and not self.cycle.response_complete):
            return
        if self._header_bytes == 0:
            self.transport.close()  # an idle connection (a browser's preconnect): no request to answer
        else:
            self._refuse(408, "The request headers did not arrive in time.")

    def _refuse(self, status: int, message: str) -> None:
        self._cancel_header_deadline()
        self._awaiting_headers = False
        if self.transport.is_closing():
            return
        body = message.encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(
            b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def bounded_protocol(max_header_bytes: int, header_timeout_s: float) -> type[Any]:
    """The protocol class for `uvicorn.Config(http=...)`, with these bounds."""
    return type(
        "BoundedHttpTools",
        (BoundedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )
