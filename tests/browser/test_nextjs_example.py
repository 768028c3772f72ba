"""The Next.js example in Chromium: its React chat posts every turn to Nexus, through the app.

The example (examples/nextjs) is built with `next build` and served with `next start`; its
route handler forwards /api/nexus/producer to a real `nexus up` on a fresh database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.stack import Nexus, saved_prospect, sql
from tests.helpers import free_port, wait_for
from tests.npm import build_next_example, output, serving_next_example

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
expect = sync_api.expect
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def next_app(nexus: Nexus, tmp_path: Path) -> Iterator[str]:
    """The built example, served on loopback and forwarding to `nexus`."""
    build = build_next_example()
    assert build.returncode == 0, output(build)
    with serving_next_example(free_port(), nexus.base, tmp_path / "next.log") as base:
        yield base


def say(page: Any, text: str) -> None:
    """Type a message in the example's chat and wait for the canned assistant's answer."""
    replies = page.locator("#chat li[data-role=assistant]")
    before = replies.count()
    page.fill("#chat input[name=message]", text)
    page.press("#chat input[name=message]", "Enter")
    expect(replies).to_have_count(before + 1, timeout=15_000)


@pytest.mark.timeout(1500)
def test_a_chat_in_the_nextjs_example_lands_in_prospect_data(
    nexus: Nexus, next_app: str, page: Any, shot: Callable[[Any, str], None]
) -> None:
    """A visitor's name and email typed into the example land in prospect_data, under the app's session id."""
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(next_app)
    say(page, "Hola, me llamo Laura Gómez")
    say(page, "Mi email es laura.gomez@example.com")
    chat = page.locator("#chat")
    expect(chat).to_have_attribute("data-pending", "0", timeout=15_000)
    expect(chat).to_have_attribute("data-state", "idle")
    shot(page, "09-nextjs-example")

    session = chat.get_attribute("data-session-id")
    fingerprint = chat.get_attribute("data-fingerprint")
    assert UUID.match(session), "the session id is the one the page's server component made"
    assert fingerprint == page.evaluate("localStorage.getItem('nexus:fingerprint')")
    assert wait_for(lambda: saved_prospect(nexus.db_url, fingerprint), timeout=20) == (
        "Laura Gómez",
        "laura.gomez@example.com",
    )
    assert posts == [f"{next_app}/api/nexus/producer"] * 4, "one POST a turn, through the app"
    queued = sql(
        nexus.db_url,
        """
        SELECT message ->> 'sessionId', (message -> 'metadata' ->> 'clientSeq')::int
        FROM (SELECT message FROM pgmq.q_nexus_prospect_ingestion
              UNION ALL SELECT message FROM pgmq.a_nexus_prospect_ingestion) m
        WHERE message ->> 'fingerprint' = %s ORDER BY 2
        """,
        (fingerprint,),
    )
    assert queued == [(session, n) for n in (1, 2, 3, 4)]


def _post(base: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/api/nexus/producer", json=body, headers=headers, timeout=10)


def test_the_route_handler_passes_nexus_refusals_through_unchanged(
    nexus: Nexus, next_app: str
) -> None:
    """Status, body and Retry-After of Nexus's refusals reach the browser as Nexus sent them."""
    turn = [{"role": "user", "content": "Hola"}]
    assert _post(next_app, {"messages": turn, "fingerprint": "fp-1", "sessionId": "s-1"}).is_success
    taken = {"messages": turn, "fingerprint": "fp-2", "sessionId": "s-1"}
    direct, proxied = _post(nexus.base, taken), _post(next_app, taken)
    assert (proxied.status_code, proxied.json()) == (direct.status_code, direct.json())
    assert proxied.json()["error"] == "session_of_another_visitor"
    limited = None
    for n in range(60):  # the fingerprint's burst is 30: a 429 comes well before 60
        limited = _post(next_app, {"messages": turn, "fingerprint": "fp-3", "sessionId": f"t-{n}"})
        if limited.status_code == 429:
            break
    assert limited is not None and limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"] == "rate_limited"
