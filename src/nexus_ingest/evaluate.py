"""Score an extractor against a labelled JSONL dataset: per-field precision, recall and F1.

Scoring rules (SPEC, "Evaluation data format"):
- only fields present in an example's `expected` are scored; `resumen` never is;
- strings match after case, accent and whitespace folding;
- `telefono` matches on digits, also when one side lacks the country code (the rest >= 7 digits);
- `productos_interes` is scored per item, as sets of folded strings;
- `nivel_interes` is right within +-2;
- a value predicted where the expected is null (or an empty list) is a false positive;
- a wrong value is both a false positive and a false negative.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers
from pydantic import ValidationError

from nexus_ingest.errors import InputError
from nexus_ingest.extract.base import Extractor
from nexus_ingest.extract.phones import ascii_digits
from nexus_ingest.models import PROSPECT_FIELDS, ChatMessage, Prospect

SCORED_FIELDS: tuple[str, ...] = tuple(name for name in PROSPECT_FIELDS if name != "resumen")
MIN_PHONE_SUFFIX = 7
NIVEL_TOLERANCE = 2


@dataclass(frozen=True)
class Example:
    """One labelled conversation; `expected` holds only the fields to score."""

    id: str
    messages: tuple[ChatMessage, ...]
    expected: Mapping[str, object]


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives of one field (or all of them)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        # Nothing predicted means nothing predicted wrongly.
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        # Nothing expected means nothing missed.
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 0.0 if total == 0 else 2 * self.precision * self.recall / total


@dataclass(frozen=True)
class Mistake:
    """A field an extractor got wrong, kept so a report can show why a score is low."""

    example_id: str
    field: str
    expected: object
    predicted: object


@dataclass(frozen=True)
class Report:
    """The outcome of one evaluation run."""

    examples: int
    fields: Mapping[str, Counts]
    mistakes: tuple[Mistake, ...] = field(default=())

    @property
    def overall(self) -> Counts:
        return sum(self.fields.values(), Counts())


def _ratio(numerator: int, denominator: int) -> float:
    return 1.0 if denominator == 0 else numerator / denominator


def fold(text: str) -> str:
    """Lower-case `text`, strip its accents and collapse its whitespace."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(bare.casefold().split())


def phones_match(expected: str, predicted: str) -> bool:
    """Whether two phone numbers are the same, ignoring format and a missing country code."""
    want, got = _phone_digits(expected), _phone_digits(predicted)
    shorter, longer = sorted((want, got), key=len)
    if want == got:
        return True
    if len(shorter) < MIN_PHONE_SUFFIX or not longer.endswith(shorter):
        return False
    # Only a country code may be missing: "2345678" is not "+34 612 345 678".
    return _is_country_code(longer[: len(longer) - len(shorter)])


def _phone_digits(text: str) -> str:
    digits = ascii_digits(text)
    # "0034 612..." dials "+34 612...": the 00 is the international prefix, not the number.
    return digits[2:] if digits.startswith("00") else digits


def _is_country_code(digits: str) -> bool:
    return digits.isdigit() and int(digits) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE


def values_match(name: str, expected: object, predicted: object) -> bool:
    """Whether a predicted scalar value counts as right for field `name`."""
    if name == "telefono":
        return phones_match(str(expected), str(predicted))
    if name == "nivel_interes" and isinstance(expected, int) and isinstance(predicted, int):
        return abs(expected - predicted) <= NIVEL_TOLERANCE
    return fold(str(expected)) == fold(str(predicted))


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def score_scalar(name: str, expected: object, predicted: object) -> Counts:
    """Count one scalar field of one example."""
    if _is_blank(predicted):
        return Counts() if _is_blank(expected) else Counts(fn=1)
    if _is_blank(expected):
        return Counts(fp=1)
    if values_match(name, expected, predicted):
        return Counts(tp=1)
    return Counts(fp=1, fn=1)


def _folded_set(items: object) -> set[str]:
    if not isinstance(items, Iterable) or isinstance(items, str):
        return set()
    return {fold(str(item)) for item in items} - {""}


def score_list(expected: object, predicted: object) -> Counts:
    """Count a list field item by item, as sets of folded strings."""
    want, got = _folded_set(expected), _folded_set(predicted)
    return Counts(tp=len(want & got), fp=len(got - want), fn=len(want - got))


def score_field(name: str, expected: object, predicted: object) -> Counts:
    """Count one field of one example."""
    if name == "productos_interes":
        return score_list(expected, predicted)
    return score_scalar(name, expected, predicted)


def score_example(expected: Mapping[str, object], predicted: Prospect) -> dict[str, Counts]:
    """Count every labelled field of one example (unlabelled fields and `resumen` are skipped)."""
    return {
        name: score_field(name, expected[name], getattr(predicted, name))
        for name in SCORED_FIELDS
        if name in expected
    }


def _mistakes(example: Example, predicted: Prospect, counts: Mapping[str, Counts]) -> list[Mistake]:
    return [
        Mistake(example.id, name, example.expected[name], getattr(predicted, name))
        for name, count in counts.items()
        if count.fp or count.fn
    ]


def tally(examples: Sequence[Example], predictions: Sequence[Prospect]) -> Report:
    """Sum the counts of every example into a report."""
    totals: dict[str, Counts] = {}
    mistakes: list[Mistake] = []
    for example, predicted in zip(examples, predictions, strict=True):
        counts = score_example(example.expected, predicted)
        for name, count in counts.items():
            totals[name] = totals.get(name, Counts()) + count
        mistakes.extend(_mistakes(example, predicted, counts))
    ordered = {name: totals[name] for name in SCORED_FIELDS if name in totals}
    return Report(examples=len(examples), fields=ordered, mistakes=tuple(mistakes))


async def evaluate(
    examples: Sequence[Example],
    extractor: Extractor,
    *,
    concurrency: int = 1,
    on_done: Callable[[], None] | None = None,
) -> Report:
    """Run `extractor` over every example, up to `concurrency` at once, and score what it returns.

    `on_done` is called after each extraction (a progress bar's tick).
    """
    slots = asyncio.Semaphore(concurrency)

    async def predict(example: Example) -> Prospect:
        async with slots:
            prospect = (await extractor.extract(example.messages)).prospect
        if on_done is not None:
            on_done()
        return prospect

    predictions = await asyncio.gather(*(predict(example) for example in examples))
    return tally(examples, predictions)


def format_report(report: Report) -> str:
    """Render a per-field table, the micro-averaged total, and a last `overall_f1=` line."""
    header = f"{'field':<18}{'tp':>5}{'fp':>5}{'fn':>5}{'precision':>11}{'recall':>8}{'f1':>7}"
    rows = [_format_row(name, counts) for name, counts in report.fields.items()]
    overall = report.overall
    return "\n".join(
        [
            f"examples: {report.examples}",
            header,
            *rows,
            _format_row("overall (micro)", overall),
            f"overall_f1={overall.f1:.3f}",
        ]
    )


def report_as_json(report: Report) -> dict[str, object]:
    """The report for a script: counts and scores per field, the total, and `overall_f1`."""
    return {
        "examples": report.examples,
        "fields": {name: _counts_json(counts) for name, counts in report.fields.items()},
        "overall": _counts_json(report.overall),
        "overall_f1": round(report.overall.f1, 6),
    }


def _counts_json(counts: Counts) -> dict[str, float]:
    return {
        "tp": counts.tp,
        "fp": counts.fp,
        "fn": counts.fn,
        "precision": round(counts.precision, 6),
        "recall": round(counts.recall, 6),
        "f1": round(counts.f1, 6),
    }


def _format_row(label: str, counts: Counts) -> str:
    return (
        f"{label:<18}{counts.tp:>5}{counts.fp:>5}{counts.fn:>5}"
        f"{counts.precision:>11.3f}{counts.recall:>8.3f}{counts.f1:>7.3f}"
    )


def load_dataset(path: Path) -> list[Example]:
    """Read a JSONL dataset; raise `InputError` naming the first bad line, or an empty file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read dataset: {exc}") from exc
    examples = [
        parse_example(line, f"{path}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    if not examples:
        # Nothing to score would print a perfect overall_f1=1.000.
        raise InputError(f"{path}: no examples to score (the dataset is empty)")
    return examples


def parse_example(line: str, where: str) -> Example:
    """Parse one JSONL line; `where` (file:line) prefixes any error message."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
    except RecursionError:
        # Deeper than the parser's recursion allows: this line's fault, not the run's.
        raise InputError(f"{where}: JSON nested too deeply to read") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object with id, messages and expected")
    return Example(
        id=_parse_id(record, where),
        messages=_parse_messages(record.get("messages"), where),
        expected=_parse_expected(record.get("expected"), where),
    )


def _parse_id(record: Mapping[str, object], where: str) -> str:
    value = record.get("id")
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise InputError(f"{where}: 'id' must be a non-empty string")
    return str(value)


def _parse_messages(raw: object, where: str) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}: 'messages' must be a non-empty list")
    try:
        return tuple(ChatMessage.model_validate(item) for item in raw)
    except ValidationError as exc:
        raise InputError(f"{where}: bad message: {_first_error(exc)}") from exc


def _parse_expected(raw: object, where: str) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: 'expected' must be an object of prospect fields")
    unknown = sorted(set(raw) - set(PROSPECT_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown field(s) in 'expected': {', '.join(unknown)}")
    try:
        prospect = Prospect.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"{where}: bad 'expected': {_first_error(exc)}") from exc
    return {name: getattr(prospect, name) for name in SCORED_FIELDS if name in raw}


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or "value"
    return f"{location}: {error['msg']}"
