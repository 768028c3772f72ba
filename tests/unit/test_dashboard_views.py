"""The dashboard's pure formatting helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from nexus_ingest.dashboard import views
from nexus_ingest.dashboard.data import MinuteCount
from nexus_ingest.dashboard.routes import admin_session, session_is_valid
from nexus_ingest.spend import SpendRow
from nexus_ingest.validation import parse_bigint

T0 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)


def minutes(*counts: tuple[int, int, int]) -> list[MinuteCount]:
    return [
        MinuteCount(T0 + timedelta(minutes=i), received, extracted, dead)
        for i, (received, extracted, dead) in enumerate(counts)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("   ", None),
        ("ana", "%ana%"),
        ("  Ana Ruiz ", "%Ana Ruiz%"),
        ("100%_off", "%100\\%\\_off%"),
        ("a\\b", "%a\\\\b%"),
        ("\x00", None),
        (" a\x00na\x00 ", "%ana%"),
    ],
)
def test_like_pattern_escapes_wildcards_and_ignores_blanks(
    text: str | None, expected: str | None
) -> None:
    """A search becomes a contains-pattern with %, _ and backslash taken literally, and without
    NULs (Postgres text refuses them)."""
    assert views.like_pattern(text) == expected


def test_like_pattern_caps_very_long_searches() -> None:
    """A pasted essay is cut to 200 characters before it reaches SQL."""
    assert len(views.like_pattern("x" * 5000) or "") == 202


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),
        ("99999999999999999999", None),
        ("9" * 5000, None),
        ("²", None),
        ("٣", None),
        ("-1", None),
        ("1e3", None),
        (" 1", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_bigint_takes_only_plain_digits_within_a_bigint(
    value: str | None, expected: int | None
) -> None:
    """Ids and counts from forms and URLs: ASCII digits that a bigint holds, nothing else."""
    assert parse_bigint(value) == expected


def test_parse_sort_and_intent_accept_only_known_values() -> None:
    """Unknown sorts fall back to recent; unknown intents mean no filter."""
    assert [views.parse_sort(s) for s in ("interest", "name", "recent", "drop table", None)] == [
        "interest",
        "name",
        "recent",
        "recent",
        "recent",
    ]
    assert [views.parse_intent(i) for i in ("compra", "queja", "COMPRA", "", None)] == [
        "compra",
        "queja",
        None,
        None,
        None,
    ]


def test_with_params_applies_changes_and_drops_empty_values() -> None:
    """Sort links keep the current search and filter."""
    current = {"q": "ana ruiz", "sort": "recent", "intent": None}
    assert views.with_params(current, sort="interest") == "?q=ana+ruiz&sort=interest"
    assert views.with_params({"q": ""}) == "?"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/dashboard/dead-letters", "/dashboard/dead-letters"),
        ("/dashboard?q=a", "/dashboard?q=a"),
        (None, "/dashboard"),
        ("https://evil.test/dashboard", "/dashboard"),
        ("//evil.test", "/dashboard"),
        ("/dashboard//evil.test", "/dashboard"),
        ("/dashboard\\@evil.test", "/dashboard"),
        ("/demo", "/dashboard"),
    ],
)
def test_safe_next_only_goes_to_dashboard_paths(target: str | None, expected: str) -> None:
    """After sign-in the browser goes to a dashboard path on this site, never elsewhere."""
    assert views.safe_next(target) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "—"),
        (-3, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (7500, "2 h 5 min"),
        (86400, "1 d"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
    ],
)
def test_format_age_reads_like_a_person_would_say_it(seconds: float | None, expected: str) -> None:
    """Ages are whole seconds, minutes, hours and minutes, or days and hours."""
    assert views.format_age(seconds) == expected


def test_times_are_shown_in_utc() -> None:
    """Timestamps from any zone are printed and encoded in UTC; None is a dash."""
    madrid = datetime(2026, 1, 2, 10, 30, 5, tzinfo=timezone(timedelta(hours=1)))
    assert views.format_time(madrid) == "2026-01-02 09:30:05 UTC"
    assert views.iso_time(madrid) == "2026-01-02T09:30:05+00:00"
    assert (views.format_time(None), views.iso_time(None)) == ("—", "")


def test_latency_tokens_and_interest() -> None:
    """Latency in ms or s, token usage only when there was any, interest as n/10 with a class."""
    assert [views.format_latency(v) for v in (None, 3.6, 999.4, 1500)] == [
        "—",
        "4 ms",
        "999 ms",
        "1.5 s",
    ]
    assert views.format_tokens(0, 0, 0) == "—"
    assert views.format_tokens(1200, 80) == "1,200 in · 80 out"
    assert views.format_tokens(1200, 80, 1024) == "1,200 in · 80 out · 1,024 cached"
    assert [views.interest_label(None), views.interest_label(8)] == ["—", "8/10"]
    assert [views.interest_class(level) for level in (None, 4, 5, 8)] == [
        "unknown",
        "cold",
        "warm",
        "hot",
    ]


def test_error_summary_and_plain_values() -> None:
    """A dead letter's error reads as one line; empty values read as a dash."""
    error = {"reason": "undecodable payload", "kind": "permanent", "attempts": 5}
    assert views.error_summary(error) == "permanent after 5 attempts: undecodable payload"
    assert views.error_summary({"reason": "boom", "kind": "retryable"}) == "retryable: boom"
    assert views.error_summary({}) == "no reason recorded"
    assert [views.text_or_dash(v) for v in (None, "", [], ["a", "b"], 7)] == [
        "—",
        "—",
        "—",
        "a, b",
        "7",
    ]


def test_error_summary_of_a_letter_written_by_hand() -> None:
    """An error that is not an object (a string, a list, a number) is shown as it is."""
    assert views.error_summary("worker crashed") == "worker crashed"
    assert views.error_summary(["a", 1]) == "['a', 1]"
    assert views.error_summary(7) == "7"
    assert views.error_summary(None) == "no reason recorded"


def test_timeline_offsets_and_details() -> None:
    """Moments read as time since the first one, their details as key=value pairs."""
    assert [
        views.offset_from(T0, T0 + timedelta(milliseconds=ms)) for ms in (0, 12.4, 1500, 125_000)
    ] == ["+0 ms", "+12 ms", "+1.5 s", "+2 min"]
    assert views.detail_text({"seq": 3, "extractor": "rules", "latency_ms": 3.0329}) == (
        "seq=3 extractor=rules latency_ms=3.0"
    )
    assert views.detail_text({}) == ""


def test_action_messages() -> None:
    """Replay and purge report how many letters they moved, in the singular or plural."""
    assert views.action_message(replayed=1) == "Replayed 1 dead letter to the work queue."
    assert views.action_message(purged=0) == "Purged 0 dead letters."
    assert views.action_message() is None


def test_throughput_chart_scales_to_the_busiest_minute() -> None:
    """Bars, line and dead-letter marks share one scale whose top is the busiest count."""
    chart = views.throughput_chart(minutes((0, 0, 0), (4, 2, 0), (2, 4, 1)), width=300, height=102)
    assert (chart.peak, chart.received, chart.extracted, chart.dead_lettered) == (4, 6, 6, 1)
    assert [b.height for b in chart.bars] == [0.0, 96.0, 48.0]
    assert [b.x for b in chart.bars] == [1.0, 101.0, 201.0]
    assert chart.line == "50.0,100.0 150.0,52.0 250.0,4.0"
    [dead] = chart.dead
    assert dead.height == 24.0 and dead.width < chart.bars[2].width
    assert dead.title == "09:02 UTC: 2 received, 4 extracted, 1 dead-lettered"
    assert chart.labels == ("09:00", "09:01", "09:02")


def test_throughput_chart_of_a_quiet_hour() -> None:
    """With no traffic the chart is flat, scaled to 1, and with no minutes it is empty."""
    quiet = views.throughput_chart(minutes(*[(0, 0, 0)] * 60))
    assert quiet.peak == 1 and {b.height for b in quiet.bars} == {0.0} and quiet.dead == ()
    assert len(quiet.labels) == 3
    empty = views.throughput_chart([])
    assert (empty.bars, empty.line, empty.labels) == ((), "", ())


def test_the_sign_in_cookie_is_dated_signed_and_never_the_token() -> None:
    """The cookie value is its issue time and a keyed hash of it: different per token, never the
    token, and valid only with its token and while it is young."""
    issued = 1_790_000_000
    value = admin_session("secret-1", issued_at=issued)
    assert value == admin_session("secret-1", issued_at=issued)
    assert value != admin_session("secret-2", issued_at=issued)
    assert "secret-1" not in value and value.startswith(f"{issued}.")
    fresh = admin_session("secret-1")
    assert session_is_valid(fresh, "secret-1") and not session_is_valid(fresh, "secret-2")
    assert not session_is_valid(value, "secret-1"), "issued long ago"


@pytest.mark.parametrize("issued", ["9" * 4301, "1" * 400, "0" * 5000, "²"])
def test_a_sign_in_cookie_with_an_absurd_issue_time_is_invalid(issued: str) -> None:
    """Thousands of digits (past int()'s limit, or float's) make a bad cookie, not an error."""
    assert not session_is_valid(f"{issued}.x", "secret-1")


def test_prospect_links_carry_the_fingerprint_encoded_in_the_query() -> None:
    """Whatever a fingerprint holds, its link keeps it whole in one query parameter."""
    assert views.prospect_url("../a b?#&+%") == (
        "/dashboard/prospect?fingerprint=..%2Fa+b%3F%23%26%2B%25"
    )


def test_spend_panel_totals_today_and_the_last_seven_days() -> None:
    """Today's card sums today's models; the week's card leaves out days before the last 7."""
    today = T0.date()

    def row(days_ago: int, model: str, cost: float) -> SpendRow:
        return SpendRow(
            model, extractions=1, output=10, cost_usd=cost, day=today - timedelta(days=days_ago)
        )

    rows = [row(0, "a", 0.25), row(0, "b", 0.5), row(6, "a", 1.0), row(7, "a", 2.0)]
    panel = views.spend_panel(rows, today, 14)
    assert (panel.today.cost_usd, panel.today.extractions) == (0.75, 2)
    assert (panel.week.cost_usd, panel.week.extractions) == (1.75, 3)
    assert len(panel.rows) == 4 and panel.days == 14


def test_tokens_and_money_read_as_a_person_reads_them() -> None:
    """Token usage says the cache's share apart; unknown money is a dash."""
    assert (
        views.format_tokens(5000, 200, 4000, 600)
        == "5,000 in · 200 out · 4,000 cached · 600 to cache"
    )
    assert views.format_tokens(0, 0) == views.DASH
    assert views.format_usd(None) == views.DASH and views.format_usd(0.0012) == "$0.001200"
    assert views.format_count(12345) == "12,345"
