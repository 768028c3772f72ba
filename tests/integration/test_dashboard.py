"""The dashboard over real HTTP: a `nexus serve` process on a fresh database."""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from nexus_ingest.dashboard.routes import COOKIE, admin_session
from tests.helpers import (
    SEED_CONVERSATION,
    free_port,
    nexus_env,
    nexus_process,
    running_nexus,
    wait_for,
    wait_healthy,
)

TOKEN = "s3cret-admin-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class Server:
    """A running `nexus serve` and its database."""

    client: httpx.Client
    db_url: str


@contextmanager
def serving(db_url: str, **extra: str) -> Iterator[httpx.Client]:
    port = free_port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules", **extra)
    with nexus_process(["serve"], env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client


@pytest.fixture
def server(db_url: str) -> Iterator[Server]:
    """The service with an admin token, and alerts that trip on a single queued message."""
    with serving(
        db_url, NEXUS_ADMIN_TOKEN=TOKEN, NEXUS_ALERT_QUEUE_LENGTH="0", NEXUS_METRICS_CACHE_S="0"
    ) as client:
        yield Server(client, db_url)


def sql(db_url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def save(db_url: str, fingerprint: str, data: dict[str, Any], msg_id: int, seq: int = 1) -> None:
    """Merge an extraction as the worker would, recorded in the history."""
    sql(
        db_url,
        "SELECT public.update_prospect_data(%s, %s, %s, %s, %s, 'rules', NULL, 0, 0, 0, 3.5)",
        (fingerprint, f"session-{fingerprint}", Jsonb(data), msg_id, seq),
    )


def dead_letter(db_url: str, session: str, original_msg_id: int, reason: str) -> int:
    """Put a snapshot in the dead-letter queue the way the worker does."""
    body = {
        "original": {
            "sessionId": session,
            "fingerprint": f"fp-{session}",
            "messages": [{"role": "user", "content": "Me llamo Dora"}],
            "seq": 1,
        },
        "originalMsgId": original_msg_id,
        "error": {"reason": reason, "kind": "permanent", "attempts": 5},
    }
    [(msg_id,)] = sql(
        db_url,
        "SELECT pgmq.send('nexus_prospect_ingestion_dlq', %s, %s)",
        (Jsonb(body), Jsonb({"x-pgmq-group": session})),
    )
    return int(msg_id)


def seed_prospects(db_url: str) -> None:
    save(
        db_url,
        "fp-ana",
        {"nombre": "Ana Ruiz", "email": "ana@acme.test", "nivel_interes": 9, "intencion": "compra"},
        msg_id=101,
    )
    save(
        db_url,
        "fp-bob",
        {"nombre": "Bob Lee", "email": "bob@corp.test", "nivel_interes": 3, "intencion": "soporte"},
        msg_id=102,
    )
    save(
        db_url,
        "fp-cid",
        {"nombre": "Cid 100%_off", "email": "cid@acme.test", "intencion": "informacion"},
        msg_id=103,
    )


def names(page: str) -> list[str]:
    """The prospect names of a prospects table, in order."""
    return re.findall(r'<a href="/dashboard/prospect\?fingerprint=[^"]+">([^<]+)</a>', page)


def test_every_dashboard_route_answers_401_without_the_token(server: Server) -> None:
    """Without a token, pages, partials and actions answer 401 with the sign-in form."""
    dead = dead_letter(server.db_url, "s-x", 1, "boom")
    client = server.client
    for method, path in [
        ("GET", "/dashboard"),
        ("GET", "/dashboard/partials/metrics"),
        ("GET", "/dashboard/partials/prospects"),
        ("GET", "/dashboard/prospect?fingerprint=fp-ana"),
        ("GET", "/dashboard/prospects/fp-ana"),
        ("GET", "/dashboard/dead-letters"),
        ("POST", "/dashboard/dead-letters/replay"),
        ("POST", "/dashboard/dead-letters/purge"),
    ]:
        response = client.request(method, path, data={"all": "1"})
        assert response.status_code == 401, path
        assert 'name="token"' in response.text
    polled = client.get("/dashboard/partials/metrics", headers={"HX-Request": "true"})
    assert polled.status_code == 401 and polled.headers["hx-redirect"] == "/dashboard/login"
    wrong = client.get("/dashboard", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client.get("/dashboard?token=nope").status_code == 401
    assert sql(server.db_url, "SELECT msg_id FROM pgmq.q_nexus_prospect_ingestion_dlq") == [(dead,)]


def test_bearer_and_form_sign_in_but_never_a_token_in_the_url(server: Server) -> None:
    """A bearer token works as is; the form sets an HttpOnly cookie that then works; a token in
    the URL (where logs, history and Referer keep it) is ignored and never echoed back."""
    client = server.client
    assert client.get("/dashboard", headers=BEARER).status_code == 200
    refused = client.post("/dashboard/login", data={"token": "nope", "next": "/dashboard"})
    assert refused.status_code == 401 and "not right" in refused.text
    signed = client.post(
        "/dashboard/login", data={"token": TOKEN, "next": "/dashboard/dead-letters"}
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/dashboard/dead-letters"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and TOKEN not in cookie
    assert client.get("/dashboard/dead-letters").status_code == 200
    client.cookies.clear()
    with httpx.Client(base_url=str(client.base_url)) as fresh:
        in_url = fresh.get(f"/dashboard?token={TOKEN}&intent=compra")
        assert in_url.status_code == 401 and "set-cookie" not in in_url.headers
        assert TOKEN not in in_url.text
        assert fresh.get("/dashboard").status_code == 401


def test_failed_sign_ins_are_throttled_per_client(server: Server) -> None:
    """After a burst of wrong tokens (form or bearer) a client gets 429 with Retry-After, even
    with the right token; another client is unaffected."""
    client = server.client
    guesses = [
        lambda n: client.post("/dashboard/login", data={"token": f"guess-{n}"}),
        lambda n: client.get("/dashboard", headers={"Authorization": f"Bearer guess-{n}"}),
    ]
    for n in range(5):
        assert guesses[n % 2](n).status_code == 401
    throttled = client.post("/dashboard/login", data={"token": TOKEN})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert client.get("/dashboard", headers=BEARER).status_code == 429
    elsewhere = {"X-Forwarded-For": "203.0.113.9"}
    other = client.post("/dashboard/login", data={"token": TOKEN}, headers=elsewhere)
    assert other.status_code == 303


def test_a_sign_in_cookie_expires(server: Server) -> None:
    """The cookie carries its issue time: within twelve hours it works (issued by an API host
    whose clock is five minutes ahead, too), older or from an hour ahead (or forged with
    another token, or the old never-expiring form) it is refused."""
    url = str(server.client.base_url)
    now = time.time()
    for value, status in [
        (admin_session(TOKEN, issued_at=now - 60), 200),
        (admin_session(TOKEN, issued_at=now + 300), 200),
        (admin_session(TOKEN, issued_at=now - 13 * 3600), 401),
        (admin_session(TOKEN, issued_at=now + 3600), 401),
        (admin_session("another-token", issued_at=now), 401),
        (hmac.new(TOKEN.encode(), b"nexus-dashboard-session-v1", hashlib.sha256).hexdigest(), 401),
        ("not-a-session", 401),
    ]:
        with httpx.Client(base_url=url, cookies={COOKIE: value}) as client:
            assert client.get("/dashboard").status_code == status, value


def test_login_never_redirects_off_site(server: Server) -> None:
    """A `next` pointing elsewhere is replaced by the dashboard itself."""
    for target in ("https://evil.test/", "//evil.test", "/demo"):
        response = server.client.post("/dashboard/login", data={"token": TOKEN, "next": target})
        assert response.headers["location"] == "/dashboard"


def test_an_oversized_sign_in_form_is_refused(server: Server) -> None:
    """A sign-in body past 16 KiB is refused with 413 before it is read whole."""
    response = server.client.post(
        "/dashboard/login",
        content=b"token=" + b"x" * 20_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


def test_cross_site_posts_with_the_cookie_are_refused(server: Server) -> None:
    """A form post carrying the cookie from another origin is refused (403) and changes nothing."""
    dead_letter(server.db_url, "s-x", 1, "boom")
    client = server.client
    client.post("/dashboard/login", data={"token": TOKEN})
    response = client.post("/dashboard/dead-letters/purge", headers={"Origin": "https://evil.test"})
    assert response.status_code == 403
    assert sql(server.db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq") == [(1,)]


def test_only_the_dashboard_itself_can_sign_out(server: Server) -> None:
    """Signing out from another origin is refused (403) and leaves the cookie; from the
    dashboard's own page, or without an Origin (a script), it clears the cookie."""
    client = server.client
    for origin in ("https://evil.test", "null", f"http://127.0.0.1:{client.base_url.port + 1}"):
        refused = client.post("/dashboard/logout", headers={"Origin": origin})
        assert refused.status_code == 403 and "set-cookie" not in refused.headers, origin
    own = client.post("/dashboard/logout", headers={"Origin": str(client.base_url).rstrip("/")})
    assert own.status_code == 303 and 'nexus_admin=""' in own.headers["set-cookie"]
    assert client.post("/dashboard/logout").status_code == 303


def test_dashboard_is_off_without_an_admin_token(db_url: str) -> None:
    """With no admin token configured the dashboard answers 404 saying how to turn it on."""
    with serving(db_url) as client:
        for path in ("/dashboard", "/dashboard/login"):
            response = client.get(path, headers=BEARER)
            assert response.status_code == 404 and "NEXUS_ADMIN_TOKEN" in response.text
        assert client.get("/demo").status_code == 200
        widget = client.get("/widget.js")
        assert widget.status_code == 200 and "javascript" in widget.headers["content-type"]
        assert "createSender" in widget.text


def test_pages_render_metrics_prospects_detail_and_trace(server: Server) -> None:
    """Overview, prospect detail (history and trace) and dead letters show the database's data."""
    seed_prospects(server.db_url)
    client = server.client
    queued = {**SEED_CONVERSATION, "fingerprint": "fp-ana", "sessionId": "session-fp-ana"}
    assert client.post("/api/nexus/producer", json=queued).status_code == 202
    dead_letter(server.db_url, "session-fp-ana", 7, "undecodable payload")

    page = client.get("/dashboard", headers=BEARER)
    assert page.status_code == 200
    assert {"Ana Ruiz", "Bob Lee"} <= set(names(page.text))
    assert "Degraded" in page.text and "queue_length 1 &gt; 0" in page.text
    assert re.search(r'data-metric="queue_length">1<', page.text)
    assert re.search(r'data-metric="dead_letters">1<', page.text)
    assert re.search(r'data-metric="extracted_hour">3<', page.text)
    assert "<svg" in page.text and "extracted 3" in page.text

    partial = client.get("/dashboard/partials/metrics", headers=BEARER)
    assert partial.status_code == 200 and "<html" not in partial.text

    old_link = client.get("/dashboard/prospects/fp-ana", headers=BEARER)
    assert old_link.headers["location"] == "/dashboard/prospect?fingerprint=fp-ana"
    detail = client.get("/dashboard/prospect?fingerprint=fp-ana", headers=BEARER)
    assert detail.status_code == 200
    assert "ana@acme.test" in detail.text and 'data-msg-id="101"' in detail.text
    assert 'data-place="queued"' in detail.text and 'data-place="dead letter"' in detail.text
    assert "undecodable payload" in detail.text and "Me llamo" not in detail.text
    assert 'data-session="session-fp-ana"' in detail.text
    assert 'data-event="saved"' in detail.text and 'data-event="enqueued"' in detail.text
    assert 'data-event="in_dead_letter_queue"' in detail.text
    assert (
        client.get("/dashboard/prospect?fingerprint=fp-nobody", headers=BEARER).status_code == 404
    )
    assert client.get("/dashboard/prospect", headers=BEARER).status_code == 404

    letters = client.get("/dashboard/dead-letters", headers=BEARER)
    assert "permanent after 5 attempts: undecodable payload" in letters.text


def bill(db_url: str, msg_id: int, session: str, model: str, cost: float | None, **kw: Any) -> None:
    """Record an LLM extraction of visitor fp-cleo with its tokens and cost."""
    sql(
        db_url,
        "SELECT public.update_prospect_data('fp-cleo', %s, '{\"nombre\": \"Cleo\"}', %s, NULL,"
        " 'anthropic', %s, %s, 200, %s, 1500, NULL, %s, %s, %s::numeric)",
        (
            session,
            msg_id,
            model,
            kw.get("prompt", 5000),
            kw.get("read", 4000),
            kw.get("write", 600),
            kw.get("batch", False),
            cost,
        ),
    )


def test_spend_shows_today_by_day_model_and_session(server: Server) -> None:
    """The overview's spend panel sums today's LLM extractions per model (an unpriced model
    counted apart); the prospect's page shows each session's tokens and cost."""
    bill(server.db_url, 201, "cleo-1", "claude-haiku-5-5", 0.0012)
    bill(server.db_url, 202, "cleo-1", "claude-haiku-5-5", 0.0005, batch=True)
    bill(server.db_url, 203, "cleo-2", "claude-haiku-5-5", 0.0010)
    bill(server.db_url, 204, "cleo-2", "house-model", None)
    save(server.db_url, "fp-rules", {"nombre": "Ruth"}, 205)  # the rules cost nothing

    page = server.client.get("/dashboard", headers=BEARER).text
    haiku = re.search(r'<tr data-day="[^"]+" data-model="claude-haiku-5-5">(.*?)</tr>', page, re.S)
    assert haiku is not None
    assert 'data-cost="0.002700"' in haiku[1] and "$0.002700" in haiku[1]
    assert "<td>3</td>" in haiku[1] and "<td>1,800</td>" in haiku[1]  # 3 x 600 written
    house = re.search(r'data-model="house-model">(.*?)</tr>', page, re.S)
    assert house is not None and "+ 1 unpriced" in house[1]
    assert re.search(r'data-spend="today">\$0\.002700<', page)
    partial = server.client.get("/dashboard/partials/spend", headers=BEARER)
    assert partial.status_code == 200 and 'data-spend="week"' in partial.text

    detail = server.client.get("/dashboard/prospect?fingerprint=fp-cleo", headers=BEARER).text
    first = re.search(
        r'<tr data-session="cleo-1" data-model="claude-haiku-5-5">(.*?)</tr>', detail, re.S
    )
    assert first is not None and 'data-cost="0.001700"' in first[1] and "(1 batched)" in first[1]
    assert "5,000 in · 200 out · 4,000 cached · 600 to cache" in detail
    assert "$0.001200" in detail and "batch</span>" in detail


def test_search_sort_and_filter_prospects(server: Server) -> None:
    """The prospects table searches any field, filters by intent and sorts by interest."""
    seed_prospects(server.db_url)

    def table(**params: str) -> str:
        response = server.client.get("/dashboard/partials/prospects", params=params, headers=BEARER)
        assert response.status_code == 200
        return response.text

    assert names(table(q="acme")) == ["Cid 100%_off", "Ana Ruiz"]
    assert names(table(q="ACME", sort="interest")) == ["Ana Ruiz", "Cid 100%_off"]
    assert names(table(sort="interest")) == ["Ana Ruiz", "Bob Lee", "Cid 100%_off"]
    assert names(table(sort="name")) == ["Ana Ruiz", "Bob Lee", "Cid 100%_off"]
    assert names(table(intent="soporte")) == ["Bob Lee"]
    assert names(table(intent="not-an-intent", sort="bogus")) == names(table())
    assert names(table(q="%_")) == ["Cid 100%_off"], "wildcards are searched literally"
    assert names(table(q="nobody")) == [] and "No prospects match" in table(q="nobody")
    response = server.client.get(
        "/dashboard/partials/prospects", params={"q": "acme", "sort": "interest"}, headers=BEARER
    )
    assert response.headers["hx-replace-url"] == "/dashboard?q=acme&sort=interest"


def test_replay_and_purge_dead_letters_from_the_dashboard(server: Server) -> None:
    """Replay sends a dead letter back to the work queue as first received; purge empties the DLQ."""
    first = dead_letter(server.db_url, "s-1", 11, "boom")
    dead_letter(server.db_url, "s-2", 12, "boom")
    dead_letter(server.db_url, "s-3", 13, "boom")
    json_bearer = {**BEARER, "Accept": "application/json"}
    replayed = server.client.post(
        "/dashboard/dead-letters/replay", data={"msg_id": str(first)}, headers=json_bearer
    )
    assert replayed.status_code == 200
    [pair] = replayed.json()["replayed"]
    assert pair["deadLetterId"] == first
    [(body, headers)] = sql(
        server.db_url, "SELECT message, headers FROM pgmq.q_nexus_prospect_ingestion"
    )
    assert body["sessionId"] == "s-1" and body["replayedFrom"] == 11 and body["seq"] == 1
    assert headers["x-pgmq-group"] == "s-1"

    fragment = server.client.post(
        "/dashboard/dead-letters/replay", data={"all": "1"}, headers={**BEARER, "HX-Request": "1"}
    )
    assert "Replayed 2 dead letters" in fragment.text and "<html" not in fragment.text
    assert sql(server.db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion") == [(3,)]

    dead_letter(server.db_url, "s-4", 14, "boom")
    purged = server.client.post("/dashboard/dead-letters/purge", headers=BEARER)
    assert purged.status_code == 303
    assert purged.headers["location"] == "/dashboard/dead-letters?purged=1"
    assert sql(server.db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq") == [(0,)]
    after = server.client.get(purged.headers["location"], headers=BEARER)
    assert "Purged 1 dead letter." in after.text and "is empty" in after.text


def test_a_nul_in_a_search_or_a_fingerprint_is_no_server_error(server: Server) -> None:
    """Postgres text cannot hold NUL: a search drops its NULs, and a fingerprint with one is
    a prospect nobody has, answered like any other unknown fingerprint."""
    seed_prospects(server.db_url)
    client = server.client
    overview = client.get("/dashboard", params={"q": "\x00"}, headers=BEARER)
    assert overview.status_code == 200 and "text/html" in overview.headers["content-type"]
    assert {"Ana Ruiz", "Bob Lee"} <= set(names(overview.text))
    table = client.get("/dashboard/partials/prospects", params={"q": "a\x00na"}, headers=BEARER)
    assert table.status_code == 200, table.text
    assert names(table.text) == ["Ana Ruiz"]
    assert table.headers["hx-replace-url"] == "/dashboard?q=ana&sort=recent"
    for fingerprint in ("\x00", "fp-ana\x00"):
        page = client.get(
            "/dashboard/prospect", params={"fingerprint": fingerprint}, headers=BEARER
        )
        assert page.status_code == 404 and "No such prospect" in page.text, page.text


def test_a_dead_letter_written_by_hand_still_shows_the_list(server: Server) -> None:
    """A letter whose error is no object (sent to the queue by hand or another tool) is listed
    with that error as its reason; the page, its fragment and the replay keep working."""
    kept = dead_letter(server.db_url, "s-1", 11, "boom")
    body = {"original": {"sessionId": "s-2", "messages": []}, "error": "worker crashed"}
    [(odd,)] = sql(
        server.db_url,
        "SELECT pgmq.send('nexus_prospect_ingestion_dlq', %s, %s)",
        (Jsonb(body), Jsonb({"x-pgmq-group": "s-2"})),
    )
    page = server.client.get("/dashboard/dead-letters", headers=BEARER)
    assert page.status_code == 200, page.text[:300]
    assert f'data-msg-id="{odd}"' in page.text and "worker crashed" in page.text
    assert f'data-msg-id="{kept}"' in page.text
    fragment = server.client.post(
        "/dashboard/dead-letters/replay",
        data={"msg_id": str(kept)},
        headers={**BEARER, "HX-Request": "1"},
    )
    assert fragment.status_code == 200 and "Replayed 1 dead letter" in fragment.text


def test_a_dead_letter_with_an_odd_original_id_leaves_the_prospect_page_up(
    server: Server,
) -> None:
    """A letter in the visitor's session whose `originalMsgId` is no number (written by hand or
    another tool) is shown on the prospect's timeline without one, instead of failing the page
    with a cast error."""
    seed_prospects(server.db_url)
    body = {"original": {"sessionId": "session-fp-ana"}, "originalMsgId": "x1", "error": "odd"}
    sql(
        server.db_url,
        "SELECT pgmq.send('nexus_prospect_ingestion_dlq', %s, %s)",
        (Jsonb(body), Jsonb({"x-pgmq-group": "session-fp-ana"})),
    )
    page = server.client.get(
        "/dashboard/prospect", params={"fingerprint": "fp-ana", "history": "1"}, headers=BEARER
    )
    assert page.status_code == 200, page.text[:300]
    assert "Ana Ruiz" in page.text


def test_replay_ignores_ids_that_are_not_dead_letter_ids(server: Server) -> None:
    """Ids beyond a bigint, or made of digits other than 0-9, are ignored like any other
    non-number; a real id beside them is still replayed."""
    first = dead_letter(server.db_url, "s-1", 11, "boom")
    json_bearer = {**BEARER, "Accept": "application/json"}
    bad = ["99999999999999999999", "9223372036854775808", "²", "٣", "-1", "1e3", "9" * 5000]
    for msg_id in bad:
        response = server.client.post(
            "/dashboard/dead-letters/replay", data={"msg_id": msg_id}, headers=json_bearer
        )
        assert response.status_code == 200, (msg_id[:30], response.text[:200])
        assert response.json() == {"replayed": []}
    mixed = server.client.post(
        "/dashboard/dead-letters/replay",
        data={"msg_id": [*bad[:4], str(first)]},
        headers=json_bearer,
    )
    assert [p["deadLetterId"] for p in mixed.json()["replayed"]] == [first]


def test_a_form_with_too_many_fields_is_refused_with_400(server: Server) -> None:
    """A sign-in form of hundreds of fields (no sign-in needed to send one) is a bad request."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = "&".join(f"f{n}=x" for n in range(201)) + f"&token={TOKEN}"
    response = server.client.post("/dashboard/login", content=body, headers=form)
    assert response.status_code == 400, response.text
    assert server.client.post("/dashboard/login", data={"token": TOKEN}).status_code == 303


def test_an_absurd_sign_in_cookie_is_just_a_wrong_one(server: Server) -> None:
    """A cookie whose issue time has thousands of digits is refused like any bad cookie."""
    url = str(server.client.base_url)
    for issued in ("9" * 4301, "1" * 400, "0" * 5000):
        with httpx.Client(base_url=url, cookies={COOKIE: f"{issued}.x"}) as client:
            for path in ("/dashboard", "/dashboard/dead-letters"):
                response = client.get(path)
                assert response.status_code == 401 and 'name="token"' in response.text, path


def test_dead_letter_notices_ignore_counts_that_are_not_counts(server: Server) -> None:
    """A notice's count from the address bar is shown only when it is a whole number."""
    client = server.client
    for query in ("replayed=abc", "purged=1e3", "replayed=-1", "purged=%C2%B2", "replayed=9e999"):
        page = client.get(f"/dashboard/dead-letters?{query}", headers=BEARER)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], query
        assert 'class="flash"' not in page.text, query
    page = client.get("/dashboard/dead-letters?replayed=2", headers=BEARER)
    assert "Replayed 2 dead letters to the work queue." in page.text


TRICKY_FINGERPRINTS = [
    "../dead-letters",
    "..",
    "./x",
    "a/../../b",
    "a/b/c",
    "x?y=1&z=2",
    "frag#ment",
    "with space",
    "100%25",
    "a+b",
    "ünïcødé-✓",
    "<b>&amp;",
]


def test_every_prospect_link_opens_its_prospect(server: Server) -> None:
    """A link in the prospects table opens that prospect whatever its fingerprint holds: slashes,
    dots, ?, #, %, +, spaces, unicode, markup (resolved as a browser resolves it)."""
    for n, fingerprint in enumerate(TRICKY_FINGERPRINTS):
        save(server.db_url, fingerprint, {"nombre": f"Visitor {n}"}, msg_id=500 + n)
    client = server.client
    table = client.get("/dashboard", headers=BEARER).text
    for n, fingerprint in enumerate(TRICKY_FINGERPRINTS):
        [href] = re.findall(rf'<a href="([^"]+)">Visitor {n}</a>', table)
        url = urljoin(f"{client.base_url}/dashboard", html.unescape(href))
        page = client.get(url, headers=BEARER)
        assert page.status_code == 200, (fingerprint, url)
        assert f"<code>{html.escape(fingerprint)}</code>" in page.text, (fingerprint, url)


def test_the_chart_counts_received_snapshots_after_they_are_processed_and_deleted(
    db_url: str,
) -> None:
    """With processed messages deleted, the chart still counts every snapshot received: once
    each, a duplicate POST not at all, and a dead letter and its replay as one."""
    with (
        running_nexus(
            ["up"],
            db_url,
            NEXUS_EXTRACTOR="rules",
            NEXUS_ADMIN_TOKEN=TOKEN,
            NEXUS_METRICS_CACHE_S="0",
            NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0",
        ) as base,
        httpx.Client(base_url=base, timeout=10, headers=BEARER) as client,
    ):
        for turns in range(1, 4):  # three snapshots of one chat, posted at once
            chat = {**SEED_CONVERSATION, "messages": SEED_CONVERSATION["messages"][:turns]}
            assert client.post("/api/nexus/producer", json=chat).status_code == 202
        keyed = {**SEED_CONVERSATION, "sessionId": "other", "fingerprint": "fp-other"}
        for _ in range(2):  # the second is the same POST retried: a duplicate
            key = {"Idempotency-Key": "once"}
            assert client.post("/api/nexus/producer", json=keyed, headers=key).status_code == 202
        dead = dead_letter(db_url, "s-dead", 424242, "boom")
        replay = client.post("/dashboard/dead-letters/replay", data={"msg_id": str(dead)})
        assert replay.status_code == 303
        wait_for(
            lambda: (
                sql(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion") == [(0,)]
                and sql(
                    db_url,
                    "SELECT count(*) FROM prospect_extractions WHERE session_id = 's-dead'",
                )
                == [(1,)]
            ),
            timeout=30,
            what="every snapshot processed",
        )
        assert sql(db_url, "SELECT count(*) FROM pgmq.a_nexus_prospect_ingestion") == [(0,)]
        panel = client.get("/dashboard/partials/metrics").text
    [(extracted,)] = sql(db_url, "SELECT count(*) FROM prospect_extractions")
    assert "received 5" in panel, re.findall(r"received \d+", panel)
    assert f"extracted {extracted}" in panel
