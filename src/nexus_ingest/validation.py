"""Checks on an incoming snapshot beyond its shape: sizes, characters, and JSON a database can keep."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from nexus_ingest.models import SnapshotIn

# Control characters other than tab, newline and carriage return have no place in a chat.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_INT64 = 2**63
BIGINT_MAX = _INT64 - 1  # the largest id or count a Postgres bigint holds
_BIGINT_DIGITS = len(str(BIGINT_MAX))
_MAX_METADATA_DEPTH = 8


@dataclass(frozen=True)
class Limits:
    """Configurable bounds on one snapshot."""

    max_messages: int
    max_content_chars: int
    max_id_chars: int


@dataclass(frozen=True)
class Problem:
    """One reason a snapshot is refused: where (`loc`) and why (`msg`)."""

    loc: tuple[str | int, ...]
    msg: str


def check_snapshot(snapshot: SnapshotIn, limits: Limits) -> list[Problem]:
    """Every way `snapshot` breaks the limits; empty when it is acceptable."""
    problems = _check_ids(snapshot, limits)
    if len(snapshot.messages) > limits.max_messages:
        problems.append(Problem(("messages",), f"at most {limits.max_messages} messages"))
    for index, message in enumerate(snapshot.messages):
        problems.extend(_check_content(message.content, ("messages", index, "content"), limits))
    if snapshot.metadata is not None:
        problems.extend(_check_json(snapshot.metadata, ("metadata",), 0))
    return problems


def _check_ids(snapshot: SnapshotIn, limits: Limits) -> list[Problem]:
    problems = []
    for loc, value in (("fingerprint", snapshot.fingerprint), ("sessionId", snapshot.session_id)):
        if not value.strip():
            problems.append(Problem((loc,), "must not be blank"))
        elif len(value) > limits.max_id_chars:
            problems.append(Problem((loc,), f"at most {limits.max_id_chars} characters"))
        elif _CONTROL.search(value) or value != value.strip():
            problems.append(Problem((loc,), "no control characters or surrounding spaces"))
        elif _has_format_characters(value):
            problems.append(Problem((loc,), "no invisible format characters (zero-width, bidi)"))
    return problems


def _has_format_characters(value: str) -> bool:
    """Whether `value` holds a Unicode format character (category Cf): zero-width spaces and
    joiners, bidi controls, byte-order marks. In an id they make two ids look the same, or one
    read backwards; chat text keeps them (emoji sequences and right-to-left text need them)."""
    return not value.isascii() and any(unicodedata.category(char) == "Cf" for char in value)


def _check_content(content: str, loc: tuple[str | int, ...], limits: Limits) -> list[Problem]:
    if not content.strip():
        return [Problem(loc, "must not be empty or whitespace only")]
    if len(content) > limits.max_content_chars:
        return [Problem(loc, f"at most {limits.max_content_chars} characters")]
    if _CONTROL.search(content):
        return [Problem(loc, "control characters are not allowed")]
    return []


def _check_json(value: Any, loc: tuple[str | int, ...], depth: int) -> list[Problem]:
    """Numbers must be finite and fit 64 bits, nesting shallow, strings (keys too) free of NUL,
    which Postgres cannot store in jsonb."""
    if depth > _MAX_METADATA_DEPTH:
        return [Problem(loc, f"nested deeper than {_MAX_METADATA_DEPTH} levels")]
    if isinstance(value, dict):
        return [
            *(Problem(loc, "NUL characters are not allowed in keys") for k in value if "\x00" in k),
            *(p for key, item in value.items() for p in _check_json(item, (*loc, key), depth + 1)),
        ]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _check_json(item, (*loc, i), depth + 1)]
    return _check_scalar(value, loc)


def _check_scalar(value: Any, loc: tuple[str | int, ...]) -> list[Problem]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        return [Problem(loc, "integer out of range")]
    if isinstance(value, float) and not math.isfinite(value):
        return [Problem(loc, "number out of range")]
    if isinstance(value, str) and "\x00" in value:
        return [Problem(loc, "NUL characters are not allowed")]
    return []


def parse_bigint(value: str | None) -> int | None:
    """A whole number of plain ASCII digits that fits a Postgres bigint, else None: `isdigit`
    alone lets through `²` and `٣`, which int() refuses, and lengths that no column holds."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > _BIGINT_DIGITS:
        return None
    number = int(value)
    return number if number <= BIGINT_MAX else None
