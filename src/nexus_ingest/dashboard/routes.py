"""The dashboard's pages and actions, the demo chat page, and the embeddable widget's script."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.dashboard import data, views
from nexus_ingest.errors import DatabaseUnavailable
from nexus_ingest.ratelimit import RateLimiter, retry_after_header
from nexus_ingest.settings import Settings
from nexus_ingest.validation import parse_bigint
from nexus_ingest.web import (
    CLIENT_CLOSED_REQUEST,
    BodyTooLarge,
    BodyTooSlow,
    ClientGone,
    bearer_matches,
    health_reasons,
    read_body,
    token_matches,
)

log = structlog.get_logger("nexus.dashboard")

_HERE = Path(__file__).parent
STATIC = _HERE / "static"
COOKIE = "nexus_admin"
_COOKIE_MAX_AGE_S = 12 * 3600
# Behind a load balancer the cookie may come back to an API host whose clock is behind the one
# that issued it: minutes on a badly kept host.
_CLOCK_SKEW_S = 600
_MAX_ISSUED_DIGITS = 12
_MAX_FORM_BYTES = 16 * 1024
_MAX_FORM_FIELDS = 200
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
}

templates = Jinja2Templates(directory=_HERE / "templates")
templates.env.filters.update(views.FILTERS)


class Halt(Exception):
    """A response that ends a request before its route runs: the sign-in page, a redirect."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def admin_session(token: str, issued_at: float | None = None) -> str:
    """The sign-in cookie's value: when it was issued, and an HMAC of that time keyed by the
    admin token, so the cookie never holds the token and can be refused once it is too old."""
    issued = int(time.time() if issued_at is None else issued_at)
    return f"{issued}.{_session_mac(token, issued)}"


def session_is_valid(value: str | None, token: str) -> bool:
    """Whether `value` is a sign-in cookie issued with `token` less than its maximum age ago."""
    issued, _, mac = (value or "").partition(".")
    # A Unix time has 10 digits until 2286; thousands of them would overflow int() and float.
    if not (issued.isascii() and issued.isdigit()) or len(issued) > _MAX_ISSUED_DIGITS:
        return False
    age = time.time() - int(issued)
    fresh = -_CLOCK_SKEW_S <= age <= _COOKIE_MAX_AGE_S
    return fresh and token_matches(mac, _session_mac(token, int(issued)))


def _session_mac(token: str, issued: int) -> str:
    message = f"nexus-dashboard-session-v2:{issued}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def _admin_token(request: Request) -> str | None:
    settings: Settings = request.app.state.settings
    return settings.admin_token.get_secret_value() if settings.admin_token else None


def _render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return templates.TemplateResponse(
        request,
        name,
        context or {},
        status_code=status,
        headers={**_SECURITY_HEADERS, **(headers or {})},
    )


def _disabled(request: Request) -> Response:
    return _render(request, "disabled.html", status=404)


def _sign_in_page(
    request: Request, *, status: int, error: str | None = None, retry_after: float = 0
) -> Response:
    # A token in the URL is never honoured, nor carried into the form to come back later.
    url = request.url.remove_query_params("token")
    target = url.path + (f"?{url.query}" if url.query else "")
    headers = {"WWW-Authenticate": 'Bearer realm="nexus-dashboard"'}
    if retry_after:
        headers["Retry-After"] = retry_after_header(retry_after)
    if request.headers.get("hx-request"):
        headers["HX-Redirect"] = "/dashboard/login"
    context = {"next": views.safe_next(target), "error": error}
    return _render(request, "login.html", context, status=status, headers=headers)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _throttled(request: Request) -> Response | None:
    """The 429 page when this client has used up its failed sign-ins, else None."""
    wait = request.app.state.sign_in_limiter.wait(_client(request))
    if not wait:
        return None
    log.warning("dashboard.sign_in_throttled", retry_in_s=round(wait, 1))
    error = "Too many wrong tokens from here; wait a moment and try again."
    return _sign_in_page(request, status=429, error=error, retry_after=wait)


def _refused(request: Request) -> None:
    """Count a wrong token against this client."""
    request.app.state.sign_in_limiter.acquire(_client(request))
    log.warning("dashboard.sign_in_refused")


def _signed_in(request: Request, token: str, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        admin_session(token),
        max_age=_COOKIE_MAX_AGE_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _same_origin(request: Request) -> bool:
    """Whether a cookie-authenticated form post comes from this site (the cookie is also SameSite)."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


def _cross_site(request: Request) -> Response:
    return _render(request, "disabled.html", {"cross_site": True}, status=403)


async def require_admin(request: Request) -> None:
    """Let through a sign-in cookie within its age, or a bearer token; wrong tokens count
    against the client, and past its allowance even a right one waits (no guessing oracle)."""
    expected = _admin_token(request)
    if expected is None:
        raise Halt(_disabled(request))
    if session_is_valid(request.cookies.get(COOKIE), expected):
        if request.method == "POST" and not _same_origin(request):
            raise Halt(_cross_site(request))
        return
    if "authorization" in request.headers:
        if (throttled := _throttled(request)) is not None:
            raise Halt(throttled)
        if bearer_matches(request, expected):
            return
        _refused(request)
    raise Halt(_sign_in_page(request, status=401))


async def _halt(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Halt)
    return exc.response


router = APIRouter(
    prefix="/dashboard", dependencies=[Depends(require_admin)], include_in_schema=False
)
public = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """Add the dashboard, the demo page, the widget and the static files to `app`."""
    settings: Settings = app.state.settings
    app.state.sign_in_limiter = RateLimiter(
        settings.admin_sign_in_per_minute, settings.admin_sign_in_burst
    )
    app.include_router(public)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(Halt, _halt)


def _pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def _first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


async def _form(request: Request) -> dict[str, list[str]]:
    """A small urlencoded form body (the dashboard's forms only carry ids and a token)."""
    settings: Settings = request.app.state.settings
    try:
        body = await read_body(request, _MAX_FORM_BYTES, settings.request_timeout_s)
    except BodyTooLarge:
        raise Halt(Response("Form too large.", status_code=413, media_type="text/plain")) from None
    except ClientGone:
        raise Halt(Response(status_code=CLIENT_CLOSED_REQUEST)) from None
    except BodyTooSlow:
        late = Response("Form too slow.", 408, {"Connection": "close"}, media_type="text/plain")
        raise Halt(late) from None
    try:
        return parse_qs(body.decode("utf-8", "replace"), max_num_fields=_MAX_FORM_FIELDS)
    except ValueError:  # more fields than allowed: parse_qs says so no other way
        crowded = Response("Too many form fields.", status_code=400, media_type="text/plain")
        raise Halt(crowded) from None


@public.get("/dashboard/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form."""
    if _admin_token(request) is None:
        return _disabled(request)
    return _render(request, "login.html", {"next": views.safe_next(next), "error": None})


@public.post("/dashboard/login")
async def login(request: Request) -> Response:
    """Check the admin token from the sign-in form; on success set the HttpOnly cookie."""
    expected = _admin_token(request)
    if expected is None:
        return _disabled(request)
    if (throttled := _throttled(request)) is not None:
        return throttled
    form = await _form(request)
    target = views.safe_next(_first(form, "next"))
    if not token_matches(_first(form, "token"), expected):
        _refused(request)
        context = {"next": target, "error": "That token is not right."}
        return _render(request, "login.html", context, status=401)
    return _signed_in(request, expected, target)


@public.post("/dashboard/logout")
async def logout(request: Request) -> Response:
    """Forget the sign-in cookie."""
    # Signing out needs no cookie, so SameSite does not guard it: another site's form could
    # otherwise sign a reader out of the page they are working in.
    if not _same_origin(request):
        return _cross_site(request)
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


@public.get("/demo")
async def demo(request: Request) -> Response:
    """A sales page with the chat widget embedded, answered by a canned assistant."""
    return _render(request, "demo.html")


@public.get("/widget.js", name="widget")
async def widget_script() -> Response:
    """The embeddable chat widget."""
    return FileResponse(
        STATIC / "widget.js",
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def _metrics_context(request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    pool = _pool(request)
    try:
        metrics, minutes, totals, dead = await asyncio.gather(
            request.app.state.queue_metrics.get(),
            data.throughput(pool),
            data.totals(pool),
            queue.dead_letter_count(pool),
        )
    except DatabaseUnavailable:
        return {"down": True, "reasons": ["database unreachable"]}
    return {
        "down": False,
        "metrics": metrics,
        "reasons": health_reasons(metrics, settings),
        "chart": views.throughput_chart(minutes),
        "totals": totals,
        "dead_letter_count": dead,
        "settings": settings,
    }


async def _prospects_context(
    pool: AsyncConnectionPool, q: str | None, sort: str | None, intent: str | None
) -> dict[str, Any]:
    chosen_sort, chosen_intent = views.parse_sort(sort), views.parse_intent(intent)
    search = data.ProspectFilter(
        pattern=views.like_pattern(q), intent=chosen_intent, sort=chosen_sort
    )
    return {
        "prospects": await data.prospects(pool, search),
        "params": {"q": views.clean_search(q), "sort": chosen_sort, "intent": chosen_intent},
        "intents": views.INTENTS,
        "sorts": views.SORTS,
        "limit": search.limit,
        "with_params": views.with_params,
    }


async def _spend_context(pool: AsyncConnectionPool) -> dict[str, Any]:
    try:
        rows = await data.spend_by_day(pool)
    except DatabaseUnavailable:
        return {"spend": None}
    return {"spend": views.spend_panel(rows, datetime.now(UTC).date(), data.SPEND_DAYS)}


@router.get("")
async def overview(
    request: Request, q: str | None = None, sort: str | None = None, intent: str | None = None
) -> Response:
    """Queue health, throughput over the last hour, LLM spend, and the prospects table."""
    metrics = await _metrics_context(request)
    spend = await _spend_context(_pool(request))
    prospects = await _prospects_context(_pool(request), q, sort, intent)
    context = {**metrics, **spend, **prospects, "page": "overview"}
    return _render(request, "overview.html", context)


@router.get("/partials/spend")
async def spend_partial(request: Request) -> Response:
    """The LLM spend panel, refreshed by the overview page now and then."""
    return _render(request, "_spend.html", await _spend_context(_pool(request)))


@router.get("/partials/metrics")
async def metrics_partial(request: Request) -> Response:
    """The live metrics panel, polled by the overview page."""
    return _render(request, "_metrics.html", await _metrics_context(request))


@router.get("/partials/prospects")
async def prospects_partial(
    request: Request, q: str | None = None, sort: str | None = None, intent: str | None = None
) -> Response:
    """The prospects table for a search; the address bar follows it."""
    context = await _prospects_context(_pool(request), q, sort, intent)
    page_url = f"/dashboard{views.with_params(context['params'])}".rstrip("?")
    return _render(request, "_prospects.html", context, headers={"HX-Replace-Url": page_url})


@router.get("/prospects/{fingerprint_id:path}")
async def old_prospect_link(fingerprint_id: str) -> Response:
    """Links of earlier versions, with the fingerprint in the path, lead to the page."""
    return RedirectResponse(views.prospect_url(fingerprint_id), status_code=308)


@router.get("/prospect")
async def prospect_page(request: Request, fingerprint: str = "") -> Response:
    """One prospect: the merged fields, the extraction history, and where its messages are."""
    detail = await data.prospect_detail(_pool(request), fingerprint) if fingerprint else None
    if detail is None:
        return _render(request, "not_found.html", {"fingerprint_id": fingerprint}, status=404)
    context = {
        "detail": detail,
        "p": detail.row,
        "page": "prospect",
        "pretty": _pretty,
        "offset_from": views.offset_from,
    }
    return _render(request, "prospect.html", context)


def _pretty(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


async def _dead_letters_context(request: Request, flash: str | None) -> dict[str, Any]:
    pool = _pool(request)
    letters, count = await asyncio.gather(
        queue.dead_letters(pool, limit=200), queue.dead_letter_count(pool)
    )
    return {"letters": letters, "count": count, "flash": flash, "page": "dead-letters"}


@router.get("/dead-letters")
async def dead_letters_page(
    request: Request, replayed: str | None = None, purged: str | None = None
) -> Response:
    """The dead-letter queue, with replay and purge."""
    # Taken as text: a count edited in the address bar drops the notice, not the page.
    replayed_count, purged_count = parse_bigint(replayed), parse_bigint(purged)
    flash = views.action_message(replayed=replayed_count, purged=purged_count)
    return _render(request, "dead_letters.html", await _dead_letters_context(request, flash))


@router.post("/dead-letters/replay")
async def replay_dead_letters(request: Request) -> Response:
    """Send one dead letter (form field `msg_id`) or all (`all=1`) back to the work queue."""
    form = await _form(request)
    ids = [n for v in form.get("msg_id", []) if (n := parse_bigint(v)) is not None]
    replay_all = _first(form, "all") in ("1", "true", "on")
    pairs = await queue.replay_dead_letters(_pool(request), msg_ids=ids, replay_all=replay_all)
    log.info("dashboard.dead_letters_replayed", count=len(pairs), msg_ids=[p[0] for p in pairs])
    payload = {"replayed": [{"deadLetterId": d, "msgId": m} for d, m in pairs]}
    return await _action_result(request, "replayed", len(pairs), payload)


@router.post("/dead-letters/purge")
async def purge_dead_letters(request: Request) -> Response:
    """Delete every dead letter."""
    purged = await queue.purge_dead_letters(_pool(request))
    log.info("dashboard.dead_letters_purged", count=purged)
    return await _action_result(request, "purged", purged, {"purged": purged})


async def _action_result(
    request: Request, action: str, count: int, payload: dict[str, Any]
) -> Response:
    """JSON for scripts, the refreshed list for htmx, else a redirect back to the list."""
    if "application/json" in request.headers.get("accept", ""):
        return Response(orjson.dumps(payload), media_type="application/json")
    if request.headers.get("hx-request"):
        flash = views.action_message(**{action: count})
        context = await _dead_letters_context(request, flash)
        return _render(request, "_dead_letters.html", context)
    return RedirectResponse(f"/dashboard/dead-letters?{action}={count}", status_code=303)


__all__ = [
    "COOKIE",
    "Halt",
    "admin_session",
    "install",
    "public",
    "require_admin",
    "router",
    "session_is_valid",
]
