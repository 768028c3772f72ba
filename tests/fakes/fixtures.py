"""Pytest fixtures: running fake LLM servers, the billing stand-in on a clock moved by hand,
Claude on it as the worker builds it, and a guard that keeps sockets on loopback.

Use from a test module or conftest with `pytest_plugins = ["tests.fakes.fixtures"]`.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from nexus_ingest.extract.anthropic import AnthropicExtractor
from nexus_ingest.extract.metered import MeteredExtractor, metered
from tests.fakes.llm_server import FakeLLMServer, running

CLAUDE_MODEL = "claude-haiku-5-5"


class NonLoopbackConnectionError(ConnectionRefusedError):
    """A test tried to open a connection beyond the loopback interface."""


def is_loopback(family: int, address: Any) -> bool:
    """Whether a `connect` to `address` stays on this machine."""
    if family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class LoopbackGuard:
    """Refuses, before any packet is sent, every socket connect to a non-loopback address."""

    def __init__(self) -> None:
        self.blocked: list[Any] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Patch `socket.socket.connect`/`connect_ex`, which asyncio's connects also go through."""
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        guard = self

        def connect(sock: socket.socket, address: Any) -> None:
            guard.check(sock, address)
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            try:
                guard.check(sock, address)
            except NonLoopbackConnectionError:
                return errno.ECONNREFUSED
            return real_connect_ex(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)

    def check(self, sock: socket.socket, address: Any) -> None:
        """Raise `NonLoopbackConnectionError` (and remember it) unless `address` is loopback."""
        if is_loopback(sock.family, address):
            return
        self.blocked.append(address)
        raise NonLoopbackConnectionError(
            errno.ECONNREFUSED, f"test guard: connection to {address!r} leaves 127.0.0.1"
        )

    def take_blocked(self) -> list[Any]:
        """The blocked addresses so far, forgetting them (for tests that expect a block)."""
        blocked, self.blocked = self.blocked, []
        return blocked


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackGuard]:
    """Fail the test if anything tried to connect beyond loopback while it ran."""
    guard = LoopbackGuard()
    guard.install(monkeypatch)
    yield guard
    assert not guard.blocked, f"connections tried to leave 127.0.0.1: {guard.blocked}"


@pytest.fixture
def anthropic_server() -> Iterator[FakeLLMServer]:
    """A running fake Anthropic Messages API."""
    yield from running("anthropic")


@pytest.fixture
def openai_server() -> Iterator[FakeLLMServer]:
    """A running fake OpenAI chat-completions API."""
    yield from running("openai")


class ManualClock:
    """A fake server's clock (cache lifetimes, batch completion), moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def stand_in(clock: ManualClock) -> Iterator[FakeLLMServer]:
    """The fake Anthropic API as a billing stand-in on `clock`: a batch ends 60 s after it is
    created, and nothing cached expires until the clock is moved."""
    with FakeLLMServer("anthropic", clock=clock, batch_delay_s=60.0) as server:
        yield server


@pytest.fixture
async def claude(stand_in: FakeLLMServer) -> AsyncIterator[MeteredExtractor]:
    """Claude on the stand-in, metered (its batches too) as `nexus worker` builds it."""
    extractor = metered(AnthropicExtractor("test-key", stand_in.base_url, CLAUDE_MODEL, 5.0, 512))
    yield extractor
    await extractor.aclose()
