"""The dashboard against hostile text and hostile sites, in headless Chromium.

Visitors write the chat, and through it every extracted field; anyone who reaches the producer
picks a fingerprint and a session id. None of it may run as script in the dashboard, and no
other site may act in it on the reader's behalf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from psycopg.types.json import Jsonb

from nexus_ingest.models import PROSPECT_FIELDS
from tests.browser.stack import TOKEN, Nexus, sql

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
expect = sync_api.expect
expect.set_options(timeout=15_000)

# Every free-text field: the list, the score and the intent are rendered from other shapes.
FIELDS = [
    f for f in PROSPECT_FIELDS if f not in ("productos_interes", "nivel_interes", "intencion")
]


def payload(tag: str) -> str:
    """Markup that records `tag` in window.__xss wherever a browser runs it."""
    mark = f"(window.__xss=(window.__xss||[]).concat('{tag}'))"
    return (
        f'"><img src=x onerror="{mark}"><script>{mark}</script>'
        f'\'><svg onload={mark}><a href="javascript:{mark}" id=xss-{tag}>x</a>'
    )


def seed_hostile_visitor(db_url: str) -> str:
    """A prospect, its history and trace, and a dead letter, all made of `payload`s."""
    fingerprint, session = payload("fingerprint"), payload("session")
    fields: dict[str, Any] = {name: payload(name) for name in FIELDS}
    fields |= {"productos_interes": [payload("producto")], payload("key"): payload("value")}
    sql(
        db_url,
        "SELECT public.update_prospect_data(%s, %s, %s, 7, 1, %s, %s, 0, 0, 0, 3.5)",
        (fingerprint, session, Jsonb(fields), payload("extractor"), payload("model")),
    )
    sql(
        db_url,
        "INSERT INTO nexus.message_events (msg_id, session_id, event, attempt, detail)"
        " VALUES (7, %s, %s, 1, %s)",
        (session, payload("event"), Jsonb({"reason": payload("detail")})),
    )
    letter = {
        "original": {"sessionId": payload("dead-session"), "fingerprint": fingerprint},
        "originalMsgId": 7,
        "error": {"reason": payload("reason"), "kind": payload("kind"), "attempts": 5},
    }
    sql(
        db_url,
        "SELECT pgmq.send('nexus_prospect_ingestion_dlq', %s, %s)",
        (Jsonb(letter), Jsonb({"x-pgmq-group": session})),
    )
    return fingerprint


def sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/dashboard/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/dashboard")


def serving(html: str) -> Callable[[Any], None]:
    """A Playwright route handler answering with `html`: a page of a site that does not exist."""
    return lambda route: route.fulfill(body=html, content_type="text/html")


def ran_script(page: Any) -> Any:
    """What markup from the database managed to do on this page: run, or add links or images."""
    return page.evaluate(
        """() => ({
            ran: window.__xss || [],
            injected: [...document.querySelectorAll('main img, main script, main svg a, [id^=xss-]')]
                .map(e => e.outerHTML.slice(0, 80)),
        })"""
    )


def test_visitor_text_never_runs_in_any_dashboard_page(nexus: Nexus, page: Any) -> None:
    """Markup in every field, the fingerprint, the session, the history and a dead letter is
    shown as text on the overview, a search, the prospect's page and the dead letters."""
    fingerprint = seed_hostile_visitor(nexus.db_url)
    sign_in(page, nexus.base)
    expect(page.locator("#prospects")).to_contain_text(payload("nombre"))
    assert ran_script(page) == {"ran": [], "injected": []}

    page.fill("input[name=q]", "onerror")
    expect(page).to_have_url(f"{nexus.base}/dashboard?q=onerror&sort=recent")
    assert ran_script(page) == {"ran": [], "injected": []}

    page.goto(f"{nexus.base}/dashboard/prospect?fingerprint={quote(fingerprint, safe='')}")
    expect(page.locator("[data-field=resumen]")).to_have_text(payload("resumen"))
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    expect(page.locator(".history pre")).to_contain_text("concat('value')")
    assert ran_script(page) == {"ran": [], "injected": []}

    page.goto(f"{nexus.base}/dashboard/dead-letters")
    expect(page.locator("#dead-letters")).to_contain_text(payload("reason"))
    assert ran_script(page) == {"ran": [], "injected": []}


def test_another_site_cannot_sign_the_reader_out(nexus: Nexus, page: Any) -> None:
    """A form on another site, or on another port of this host, posting to the sign-out is
    refused, and the reader stays signed in."""
    sign_in(page, nexus.base)
    port = int(nexus.base.rsplit(":", 1)[1])
    for origin in ("http://evil.test", f"http://127.0.0.1:{port + 1}"):
        form = (
            f'<form method="post" action="{nexus.base}/dashboard/logout"></form>'
            "<script>document.forms[0].submit()</script>"
        )
        page.route(f"{origin}/", serving(form))
        page.goto(f"{origin}/")
        page.wait_for_url(f"{nexus.base}/dashboard/**")
        assert [c["name"] for c in page.context.cookies()] == ["nexus_admin"], origin
        expect(page.locator("h1")).to_have_text("Refused")
    page.goto(f"{nexus.base}/dashboard")
    expect(page.locator("#prospects")).to_be_visible()

    page.click("text=Sign out")
    expect(page).to_have_url(f"{nexus.base}/dashboard/login")
    assert page.context.cookies() == []


def test_searches_leave_no_copy_of_the_pages_in_the_browser(nexus: Nexus, page: Any) -> None:
    """The pages hold personal data and are never stored (no-store): a search, which updates
    the address bar, keeps no copy of them in the tab's storage either, before or after sign-out."""
    sql(
        nexus.db_url,
        "SELECT public.update_prospect_data('fp-ana', 's-ana', %s, 1, 1, 'rules', NULL,"
        " 0, 0, 0, 3.5)",
        (Jsonb({"nombre": "Ana Ruiz", "email": "ana@acme.test"}),),
    )
    sign_in(page, nexus.base)
    page.fill("input[name=q]", "ana")
    expect(page).to_have_url(f"{nexus.base}/dashboard?q=ana&sort=recent")
    page.fill("input[name=q]", "ana@")
    expect(page).to_have_url(f"{nexus.base}/dashboard?q=ana%40&sort=recent")
    stored = "JSON.stringify({...sessionStorage, ...localStorage})"
    assert "ana@acme.test" not in page.evaluate(stored)
    page.click("text=Sign out")
    expect(page).to_have_url(f"{nexus.base}/dashboard/login")
    assert "ana@acme.test" not in page.evaluate(stored)
