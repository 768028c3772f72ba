"""A visitor chats in /demo and an operator works the dashboard, in headless Chromium.

`nexus up` (rules extractor) runs as a real process on a fresh database. /demo embeds
/widget.js, the bundle of the client package in clients/js.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from tests.browser.stack import TOKEN, Nexus, saved_prospect, sql
from tests.helpers import wait_for

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
expect = sync_api.expect

PRODUCER = "**/api/nexus/producer"
expect.set_options(timeout=15_000)


def say(page: Any, text: str) -> None:
    """Type a message in the widget and wait for the canned assistant's answer."""
    replies = page.locator("#nexus-chat .nxw-assistant")
    before = replies.count()
    page.fill("#nexus-chat input[name=message]", text)
    page.press("#nexus-chat input[name=message]", "Enter")
    expect(replies).to_have_count(before + 1)


def settled(page: Any) -> None:
    """Wait until the widget has delivered every snapshot."""
    chat = page.locator("#nexus-chat")
    expect(chat).to_have_attribute("data-pending", "0")
    expect(chat).to_have_attribute("data-state", "idle")


def sign_in(page: Any, base: str, path: str = "/dashboard") -> None:
    """Open `path`, sign in on the form it shows, and land back on `path`."""
    page.goto(f"{base}{path}")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}{path}")


def test_demo_chat_shows_the_prospect_on_the_dashboard(
    nexus: Nexus, page: Any, shot: Callable[[Any, str], None]
) -> None:
    """A visitor who gives a name and email in /demo appears on the dashboard with those fields."""
    page.goto(f"{nexus.base}/demo")
    say(page, "Hola, me llamo Laura Gómez")
    say(page, "Mi email es laura.gomez@example.com")
    say(page, "Quiero comprar el plan anual este mes")
    settled(page)
    shot(page, "01-demo-chat")
    fingerprint = page.evaluate("localStorage.getItem('nexus:fingerprint')")
    assert wait_for(lambda: saved_prospect(nexus.db_url, fingerprint), timeout=15) == (
        "Laura Gómez",
        "laura.gomez@example.com",
    )

    sign_in(page, nexus.base)
    row = page.locator(f'tr[data-fingerprint="{fingerprint}"]')
    expect(row).to_contain_text("Laura Gómez")
    expect(row).to_contain_text("laura.gomez@example.com")
    expect(row).to_contain_text("compra")
    expect(page.locator("[data-metric=prospects]")).to_have_text("1")
    shot(page, "02-dashboard")

    page.fill("input[name=q]", "nobody-matches-this")
    expect(page.locator("#prospects")).to_contain_text("No prospects match")
    page.fill("input[name=q]", "laura.gomez")
    expect(row).to_be_visible()

    row.get_by_role("link", name="Laura Gómez").click()
    expect(page.locator("[data-field=email]")).to_have_text("laura.gomez@example.com")
    expect(page.locator("table.history tbody tr").first).to_contain_text("rules")
    expect(page.locator('table.trace tr[data-place="archived"]').first).to_be_visible()
    shot(page, "03-prospect-detail")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{nexus.base}/dashboard")
    expect(row).to_contain_text("Laura Gómez")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "04-dashboard-phone")


def dead_letter(db_url: str, session: str, fingerprint: str) -> int:
    """A snapshot in the dead-letter queue, shaped as the worker writes it."""
    original = {
        "sessionId": session,
        "fingerprint": fingerprint,
        "messages": [
            {"role": "user", "content": "Hola, me llamo Dora Pérez"},
            {"role": "assistant", "content": "Encantada, soy Sofía. ¿Tu email?"},
            {"role": "user", "content": "Mi email es dora.perez@example.com"},
        ],
        "metadata": {},
        "seq": 1,
    }
    body = {
        "original": original,
        "originalMsgId": 4242,
        "error": {"reason": "RateLimited: provider overloaded", "kind": "retryable", "attempts": 5},
    }
    [(msg_id,)] = sql(
        db_url,
        "SELECT pgmq.send('nexus_prospect_ingestion_dlq', %s, %s)",
        (Jsonb(body), Jsonb({"x-pgmq-group": session})),
    )
    return int(msg_id)


def test_a_dead_letter_replayed_from_the_dashboard_is_saved(
    nexus: Nexus, page: Any, shot: Callable[[Any, str], None]
) -> None:
    """Replay on the dead-letters page sends the message back, and the worker then saves it."""
    msg_id = dead_letter(nexus.db_url, "session-dora", "fp-dora")
    sign_in(page, nexus.base, "/dashboard/dead-letters")
    row = page.locator(f'tr[data-msg-id="{msg_id}"]')
    expect(row).to_contain_text("retryable after 5 attempts: RateLimited")
    expect(page.locator("[data-count]")).to_have_text("1 waiting")
    shot(page, "05-dead-letters")

    row.get_by_role("button", name="Replay").click()
    expect(page.locator(".flash")).to_have_text("Replayed 1 dead letter to the work queue.")
    expect(page.locator("#dead-letters")).to_contain_text("The dead-letter queue is empty.")
    shot(page, "06-dead-letters-replayed")
    assert wait_for(lambda: saved_prospect(nexus.db_url, "fp-dora"), timeout=15) == (
        "Dora Pérez",
        "dora.perez@example.com",
    )

    page.goto(f"{nexus.base}/dashboard/prospect?fingerprint=fp-dora")
    expect(page.locator("[data-field=email]")).to_have_text("dora.perez@example.com")
    expect(page.locator('table.trace tr[data-place="replayed dead letter"]')).to_have_count(1)
    expect(page.locator('table.trace tr[data-place="archived"]')).to_have_count(1)
    expect(
        page.locator('.timeline[data-session="session-dora"] tr[data-event="saved"]')
    ).to_be_visible()
    shot(page, "07-replayed-prospect")


@dataclass
class Faults:
    """Fails some producer POSTs on purpose and watches how many are in flight at once."""

    plan: dict[int, str]
    posts: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    injected: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def route(self, route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        self.posts += 1
        self.keys.append(route.request.headers["idempotency-key"])
        fault = self.plan.get(self.posts, "pass")
        self.injected.append(fault)
        if fault == "503":
            route.fulfill(status=503, headers={"Retry-After": "1"}, json={"status": "error"})
        elif fault == "429":
            route.fulfill(status=429, json={"status": "error", "error": "rate_limited"})
        elif fault == "drop":  # the network fails before the server sees the request
            route.abort("connectionreset")
        elif fault == "lost-reply":  # the server commits, the reply never arrives
            route.fetch()
            route.abort("connectionreset")
        else:
            route.continue_()

    def started(self, request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/api/nexus/producer"):
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def ended(self, request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/api/nexus/producer"):
            self.in_flight -= 1


def session_messages(db_url: str, session: str) -> list[tuple[int, int, int]]:
    """(server seq, client seq, turns) of every snapshot of a session, queued or archived."""
    return [
        (row[0], row[1], row[2])
        for row in sql(
            db_url,
            """
            SELECT (message ->> 'seq')::int, (message -> 'metadata' ->> 'clientSeq')::int,
                   jsonb_array_length(message -> 'messages')
            FROM (SELECT message, headers FROM pgmq.q_nexus_prospect_ingestion
                  UNION ALL
                  SELECT message, headers FROM pgmq.a_nexus_prospect_ingestion) m
            WHERE headers ->> 'x-pgmq-group' = %s
            ORDER BY 1
            """,
            (session,),
        )
    ]


def test_failures_and_a_slow_network_lose_no_snapshot_and_keep_order(
    nexus: Nexus, page: Any, shot: Callable[[Any, str], None]
) -> None:
    """With 503s, a 429, dropped and lost replies on a slow link, every snapshot lands once, in order."""
    faults = Faults({2: "503", 3: "drop", 5: "lost-reply", 7: "429", 9: "503"})
    page.on("request", faults.started)
    page.on("requestfinished", faults.ended)
    page.on("requestfailed", faults.ended)
    page.route(PRODUCER, faults.route)
    page.goto(f"{nexus.base}/demo")
    cdp = page.context.new_cdp_session(page)
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 150,
            "downloadThroughput": 50_000,
            "uploadThroughput": 20_000,
        },
    )
    chat = page.locator("#nexus-chat")
    for text in (  # faster than the link answers: snapshots queue up behind each other
        "Hola, me llamo Marta Ruiz",
        "Mi email es marta.ruiz@example.com",
        "Quiero información sobre el plan anual",
    ):
        page.fill("#nexus-chat input[name=message]", text)
        page.press("#nexus-chat input[name=message]", "Enter")
    expect(page.locator("#nexus-chat .nxw-msg")).to_have_count(6)
    settled(page)
    shot(page, "08-demo-after-faults")

    session = chat.get_attribute("data-session-id")
    fingerprint = page.evaluate("localStorage.getItem('nexus:fingerprint')")
    assert wait_for(lambda: saved_prospect(nexus.db_url, fingerprint), timeout=15) == (
        "Marta Ruiz",
        "marta.ruiz@example.com",
    )
    wait_for(
        lambda: not sql(nexus.db_url, "SELECT 1 FROM pgmq.q_nexus_prospect_ingestion"),
        what="the queue to drain",
    )
    snapshots = session_messages(nexus.db_url, session)
    assert [client for _, client, _ in snapshots] == [1, 2, 3, 4, 5, 6], snapshots
    assert [turns for _, _, turns in snapshots] == [1, 2, 3, 4, 5, 6]
    assert {"503", "429", "drop", "lost-reply"} <= set(faults.injected)
    assert faults.posts == 6 + 5, "each fault costs exactly one retry"
    assert faults.max_in_flight == 1
    assert len(set(faults.keys)) == 6, "every retry reused its snapshot's Idempotency-Key"
    keys = sql(
        nexus.db_url,
        "SELECT key, seq FROM nexus.idempotency_keys WHERE key = ANY(%s) ORDER BY seq",
        (list(set(faults.keys)),),
    )
    assert [seq for _, seq in keys] == [1, 2, 3, 4, 5, 6]
    assert [key for key, _ in keys] == list(dict.fromkeys(faults.keys)), "keys in sending order"
    applied = sql(
        nexus.db_url,
        "SELECT seq FROM prospect_extractions WHERE session_id = %s AND outcome = 'applied' ORDER BY id",
        (session,),
    )
    assert [s for (s,) in applied] == sorted(s for (s,) in applied)
    [(last_seq, applied_seq)] = sql(
        nexus.db_url,
        "SELECT last_seq, applied_seq FROM nexus.sessions WHERE session_id = %s",
        (session,),
    )
    assert last_seq == applied_seq == 6
