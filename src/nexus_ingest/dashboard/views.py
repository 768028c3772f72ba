"""Pure formatting helpers of the dashboard: numbers, times and the throughput chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, get_args
from urllib.parse import urlencode

from nexus_ingest.dashboard.data import MinuteCount, Sort
from nexus_ingest.models import Intent
from nexus_ingest.spend import SpendRow, total_spend, usd

INTENTS: tuple[str, ...] = get_args(Intent)
SORTS: tuple[Sort, ...] = get_args(Sort)
DASH = "—"
_MAX_SEARCH = 200


def clean_search(text: str | None) -> str:
    """A search as typed, without NULs (Postgres text cannot hold them, and no field has one),
    trimmed and capped."""
    return (text or "").replace("\x00", "").strip()[:_MAX_SEARCH]


def like_pattern(text: str | None) -> str | None:
    """An ILIKE pattern matching `text` anywhere, its wildcards escaped; None for a blank search."""
    cleaned = clean_search(text)
    if not cleaned:
        return None
    escaped = cleaned.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def parse_sort(value: str | None) -> Sort:
    """The requested sort order, or `recent` for anything unknown."""
    for sort in SORTS:
        if value == sort:
            return sort
    return "recent"


def parse_intent(value: str | None) -> str | None:
    """The requested intent filter when it is a known intent, else no filter."""
    return value if value in INTENTS else None


def with_params(current: Mapping[str, str | None], **changes: str | None) -> str:
    """A query string of `current` with `changes` applied, leaving out empty values."""
    merged = {**current, **changes}
    kept = {k: v for k, v in merged.items() if v}
    return f"?{urlencode(kept)}" if kept else "?"


def prospect_url(fingerprint_id: str) -> str:
    """The page of one prospect. The fingerprint goes in the query string, encoded: in the path,
    a fingerprint like `../dead-letters` would be resolved by the browser into another page."""
    return f"/dashboard/prospect?{urlencode({'fingerprint': fingerprint_id})}"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path on this site, never another site."""
    if target and target.startswith("/dashboard") and "//" not in target and "\\" not in target:
        return target
    return "/dashboard"


def format_age(seconds: float | None) -> str:
    """A duration as a person reads it: `45 s`, `3 min`, `2 h 5 min`, `3 d 4 h`."""
    if seconds is None:
        return DASH
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(s // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_time(moment: datetime | None) -> str:
    """A timestamp in UTC to the second; the browser shows it in local time."""
    if moment is None:
        return DASH
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(moment: datetime | None) -> str:
    """A timestamp as ISO 8601, for `<time datetime=...>`."""
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def format_latency(ms: float | None) -> str:
    """Milliseconds below a second, seconds with one decimal above."""
    if ms is None:
        return DASH
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def format_tokens(
    input_tokens: int, output_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
) -> str:
    """Token usage of one extraction (`input_tokens` is the whole prompt, the cache's share
    said apart); a dash when the extractor used none."""
    if not (input_tokens or output_tokens or cached_tokens or cache_write_tokens):
        return DASH
    parts = [f"{input_tokens:,} in", f"{output_tokens:,} out"]
    if cached_tokens:
        parts.append(f"{cached_tokens:,} cached")
    if cache_write_tokens:
        parts.append(f"{cache_write_tokens:,} to cache")
    return " · ".join(parts)


def format_usd(amount: float | None) -> str:
    """Money as `usd` writes it; a dash when unknown."""
    return DASH if amount is None else usd(amount)


def format_count(count: int | None) -> str:
    """A count with thousands separators."""
    return DASH if count is None else f"{count:,}"


@dataclass(frozen=True)
class SpendPanel:
    """LLM spend for the overview: today, the last 7 days, and every day and model shown."""

    today: SpendRow
    week: SpendRow
    rows: tuple[SpendRow, ...]
    days: int


def spend_panel(rows: Sequence[SpendRow], today: date, days: int) -> SpendPanel:
    """Totals for today and the last 7 days (UTC) over per-day, per-model rows."""
    week_start = today - timedelta(days=6)
    return SpendPanel(
        today=total_spend([r for r in rows if r.day == today], "today"),
        week=total_spend([r for r in rows if r.day is not None and r.day >= week_start], "7 days"),
        rows=tuple(rows),
        days=days,
    )


def interest_label(level: int | None) -> str:
    """Interest as `8/10`, or a dash when unknown."""
    return DASH if level is None else f"{level}/10"


def interest_class(level: int | None) -> str:
    """A CSS class by interest: hot (8+), warm (5+), cold, or unknown."""
    if level is None:
        return "unknown"
    return "hot" if level >= 8 else "warm" if level >= 5 else "cold"


def error_summary(error: object) -> str:
    """Why a message was dead-lettered, in one line."""
    # The dead-letter queue is a plain PGMQ queue: a letter put there by hand or by another
    # tool may carry any JSON as its error, and one such letter must not take the page down.
    if not isinstance(error, Mapping):
        return str(error) if error else "no reason recorded"
    reason = str(error.get("reason") or "no reason recorded")
    kind = error.get("kind")
    attempts = error.get("attempts")
    prefix = " ".join(
        part
        for part in (str(kind) if kind else "", f"after {attempts} attempts" if attempts else "")
        if part
    )
    return f"{prefix}: {reason}" if prefix else reason


def offset_from(start: datetime, moment: datetime) -> str:
    """How long after `start` a moment came: `+0 ms`, `+12 ms`, `+1.5 s`, `+2 min`."""
    ms = (moment - start).total_seconds() * 1000
    if ms < 1000:
        return f"+{ms:.0f} ms"
    return f"+{ms / 1000:.1f} s" if ms < 60_000 else f"+{format_age(ms / 1000)}"


def detail_text(detail: Mapping[str, Any]) -> str:
    """A moment's details as `key=value` pairs, in their order, fractions to one decimal."""
    return " ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in detail.items()
    )


def plural(count: int, noun: str) -> str:
    """`1 dead letter`, `3 dead letters`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def action_message(*, replayed: int | None = None, purged: int | None = None) -> str | None:
    """What a dead-letter action did, as a sentence; None when there was no action."""
    if replayed is not None:
        return f"Replayed {plural(replayed, 'dead letter')} to the work queue."
    if purged is not None:
        return f"Purged {plural(purged, 'dead letter')}."
    return None


def text_or_dash(value: object) -> str:
    """A value as text; a dash for None, blanks and empty lists."""
    if value is None or value == "" or value == []:
        return DASH
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Bar:
    """One minute of received snapshots in the chart."""

    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Chart:
    """An inline SVG chart of the last hour: bars received, a line extracted, dots dead-lettered.

    Text stays out of the SVG (it stretches with the chart), so `labels` go underneath in HTML.
    """

    width: int
    height: int
    plot_height: int
    bars: tuple[Bar, ...]
    line: str
    dead: tuple[Bar, ...]
    labels: tuple[str, ...]
    peak: int
    received: int
    extracted: int
    dead_lettered: int


def throughput_chart(
    minutes: Sequence[MinuteCount], *, width: int = 600, height: int = 120
) -> Chart:
    """Lay out per-minute counts in an SVG coordinate space of `width` x `height`."""
    plot_height = height - 2  # the baseline stays visible
    peak = max([1, *(max(m.received, m.extracted, m.dead_lettered) for m in minutes)])
    step = width / max(1, len(minutes))

    def y(count: int) -> float:
        return round(plot_height - count / peak * (plot_height - 4), 1)

    def bar(i: int, count: int, m: MinuteCount, share: float) -> Bar:
        bar_width = max(1.0, (step - 2) * share)
        x = i * step + 1 + (step - 2 - bar_width) / 2
        return Bar(
            round(x, 1),
            y(count),
            round(bar_width, 1),
            round(plot_height - y(count), 1),
            _minute_title(m),
        )

    centres = [round(i * step + step / 2, 1) for i in range(len(minutes))]
    return Chart(
        width=width,
        height=height,
        plot_height=plot_height,
        bars=tuple(bar(i, m.received, m, 1.0) for i, m in enumerate(minutes)),
        line=" ".join(f"{x},{y(m.extracted)}" for x, m in zip(centres, minutes, strict=True)),
        dead=tuple(
            bar(i, m.dead_lettered, m, 0.4) for i, m in enumerate(minutes) if m.dead_lettered
        ),
        labels=_labels(minutes),
        peak=peak,
        received=sum(m.received for m in minutes),
        extracted=sum(m.extracted for m in minutes),
        dead_lettered=sum(m.dead_lettered for m in minutes),
    )


def _minute_title(m: MinuteCount) -> str:
    return (
        f"{m.minute.astimezone(UTC):%H:%M} UTC: {m.received} received, "
        f"{m.extracted} extracted, {m.dead_lettered} dead-lettered"
    )


def _labels(minutes: Sequence[MinuteCount]) -> tuple[str, ...]:
    """The first, middle and last minute, for the time axis under the chart."""
    if not minutes:
        return ()
    picks = sorted({0, len(minutes) // 2, len(minutes) - 1})
    return tuple(f"{minutes[i].minute.astimezone(UTC):%H:%M}" for i in picks)


FILTERS = {
    "prospect_url": prospect_url,
    "age": format_age,
    "when": format_time,
    "iso": iso_time,
    "latency": format_latency,
    "tokens": format_tokens,
    "usd": format_usd,
    "thousands": format_count,
    "interest": interest_label,
    "interest_class": interest_class,
    "error_summary": error_summary,
    "dash": text_or_dash,
    "detail_text": detail_text,
}
