"""Scoring an extractor against a labelled dataset: pure counting rules, the loader, the report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from nexus_ingest.errors import InputError
from nexus_ingest.evaluate import (
    Counts,
    Example,
    Report,
    evaluate,
    fold,
    format_report,
    load_dataset,
    phones_match,
    report_as_json,
    score_example,
    score_field,
    tally,
)
from nexus_ingest.extract.base import Extraction
from nexus_ingest.models import ChatMessage, Prospect

HELLO = [{"role": "user", "content": "hola"}]


class FixedExtractor:
    """Returns the same prospect for every chat."""

    name = "fixed"
    in_process = True

    def __init__(self, prospect: Prospect) -> None:
        self.prospect = prospect

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        return Extraction(prospect=self.prospect, extractor=self.name)

    async def aclose(self) -> None:
        return None


def example(expected: dict[str, object], example_id: str = "x") -> Example:
    """An example with a one-turn chat and the given labels."""
    return Example(example_id, (ChatMessage(role="user", content="hola"),), expected)


def write_lines(tmp_path: Path, *lines: str) -> Path:
    """A dataset file holding `lines`."""
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_fold_ignores_case_accents_and_whitespace() -> None:
    """Folding makes 'Lucía  FERNÁNDEZ ' equal to 'lucia fernandez'."""
    assert fold("  Lucía \t FERNÁNDEZ ") == "lucia fernandez"


def test_strings_match_after_folding() -> None:
    """A name differing only in case, accents and spacing is a true positive."""
    assert score_field("nombre", "José  Ángel", "jose angel") == Counts(tp=1)


def test_wrong_value_is_false_positive_and_false_negative() -> None:
    """A wrong value counts against both precision and recall."""
    assert score_field("empresa", "Acme", "Globex") == Counts(fp=1, fn=1)


def test_missing_value_is_false_negative() -> None:
    """No prediction where a value was expected is a false negative."""
    assert score_field("email", "a@b.com", None) == Counts(fn=1)


@pytest.mark.parametrize(
    ("expected", "predicted", "same"),
    [
        ("+34 612 345 678", "612345678", True),
        ("612-34-56-78", "+34612345678", True),
        ("(555) 123-4567", "+1 555 123 4567", True),
        ("5550188", "15550188", True),
        ("612345678", "612345679", False),
        ("123456", "99123456", False),
        ("612345678", "+34612345670", False),
    ],
)
def test_phone_suffix_rule(expected: str, predicted: str, same: bool) -> None:
    """Phones compare digits; a missing country code is forgiven when 7+ digits remain."""
    assert phones_match(expected, predicted) is same


@pytest.mark.parametrize(
    ("expected", "predicted", "same"),
    [
        ("+34 612 345 678", "2345678", False),
        ("+34 612 345 678", "12345678", False),
        ("612345678", "99612345678", False),
        ("0034 612 345 678", "612345678", True),
        ("0034 612 345 678", "+34 612 345 678", True),
        ("+1 415 555 2671", "415 555 2671", True),
    ],
)
def test_phone_forgives_only_a_missing_country_code(
    expected: str, predicted: str, same: bool
) -> None:
    """What one side has more than the other must be a country code (or "00" and one), not
    any digits: a number's last seven digits are not the number."""
    assert phones_match(expected, predicted) is same


@pytest.mark.parametrize(
    ("expected", "predicted", "counts"),
    [
        (7, 9, Counts(tp=1)),
        (7, 5, Counts(tp=1)),
        (7, 10, Counts(fp=1, fn=1)),
        (2, 5, Counts(fp=1, fn=1)),
    ],
)
def test_interest_level_within_two(expected: int, predicted: int, counts: Counts) -> None:
    """nivel_interes is right within ±2 and wrong beyond."""
    assert score_field("nivel_interes", expected, predicted) == counts


def test_products_scored_as_sets_per_item() -> None:
    """Products count per item after folding, ignoring order and duplicates."""
    counts = score_field("productos_interes", ["CRM", "Diseño web"], ["diseno web", "SEO", "crm"])
    assert counts == Counts(tp=2, fp=1, fn=0)


@pytest.mark.parametrize(
    ("name", "predicted", "counts"),
    [
        ("email", "a@b.com", Counts(fp=1)),
        ("email", None, Counts()),
        ("nivel_interes", 10, Counts(fp=1)),
        ("productos_interes", ["CRM", "SEO"], Counts(fp=2)),
    ],
)
def test_null_expected_counts_against_precision(
    name: str, predicted: object, counts: Counts
) -> None:
    """A value predicted where null was expected is a false positive; silence costs nothing."""
    assert score_field(name, None, predicted) == counts


def test_absent_fields_and_resumen_are_not_scored() -> None:
    """Only labelled fields are scored, and resumen never is."""
    predicted = Prospect(nombre="Ana", email="x@y.z", resumen="otra cosa")
    scored = score_example({"nombre": "Ana", "resumen": "algo"}, predicted)
    assert scored == {"nombre": Counts(tp=1)}


def test_precision_recall_f1() -> None:
    """Precision, recall and F1 follow their definitions; an empty count is perfect."""
    counts = Counts(tp=6, fp=2, fn=4)
    assert (counts.precision, counts.recall) == (0.75, 0.6)
    assert counts.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert (Counts().precision, Counts().recall, Counts().f1) == (1.0, 1.0, 1.0)


def test_tally_micro_averages_over_fields() -> None:
    """The overall score sums every field's counts before dividing."""
    examples = [example({"nombre": "Ana", "email": None}), example({"nombre": "Luis"}, "y")]
    predictions = [Prospect(nombre="Ana", email="a@b.c"), Prospect(nombre=None)]
    report = tally(examples, predictions)
    assert report.fields == {"nombre": Counts(tp=1, fn=1), "email": Counts(fp=1)}
    assert report.overall == Counts(tp=1, fp=1, fn=1)
    assert [(m.example_id, m.field) for m in report.mistakes] == [("x", "email"), ("y", "nombre")]


async def test_evaluate_runs_the_extractor_on_every_example() -> None:
    """evaluate() asks the extractor about each example and scores its answers."""
    examples = [example({"nombre": "Ana"}), example({"nombre": "Bea"}, "y")]
    report = await evaluate(examples, FixedExtractor(Prospect(nombre="ana")))
    assert (report.examples, report.fields["nombre"]) == (2, Counts(tp=1, fp=1, fn=1))


class GateExtractor(FixedExtractor):
    """Answers only once `width` calls are in flight together (or fails after a deadline)."""

    def __init__(self, prospect: Prospect, width: int) -> None:
        super().__init__(prospect)
        self.width = width
        self.in_flight = 0
        self.widest = 0
        self.done: list[int] = []

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        self.in_flight += 1
        self.widest = max(self.widest, self.in_flight)
        async with asyncio.timeout(5):
            while self.widest < self.width:
                await asyncio.sleep(0.001)
        self.in_flight -= 1
        return await super().extract(messages)


async def test_evaluate_runs_up_to_concurrency_extractions_at_once_in_order() -> None:
    """With concurrency 3, three extractions overlap, never more; the report and ticks are complete."""
    examples = [example({"nombre": "Ana"}, str(n)) for n in range(7)]
    gate = GateExtractor(Prospect(nombre="Ana"), width=3)
    ticks: list[int] = []
    report = await evaluate(examples, gate, concurrency=3, on_done=lambda: ticks.append(1))
    assert gate.widest == 3
    assert (report.examples, report.fields["nombre"], len(ticks)) == (7, Counts(tp=7), 7)


def test_report_as_json_matches_the_table() -> None:
    """The JSON report holds each field's counts and scores, and the same overall_f1 as the table."""
    report = Report(examples=3, fields={"nombre": Counts(tp=2, fn=1), "email": Counts(tp=1)})
    as_json = report_as_json(report)
    assert as_json["fields"]["nombre"] == {
        "tp": 2,
        "fp": 0,
        "fn": 1,
        "precision": 1.0,
        "recall": 0.666667,
        "f1": 0.8,
    }
    assert f"overall_f1={as_json['overall_f1']:.3f}" == format_report(report).splitlines()[-1]


def test_load_dataset_refuses_an_empty_file(tmp_path: Path) -> None:
    """A dataset with no examples is an error naming the file, never a perfect score."""
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(InputError, match="no examples"):
        load_dataset(path)


def test_format_report_table_and_last_line() -> None:
    """The report lists each field with its counts and ends with overall_f1=<3 decimals>."""
    report = Report(examples=3, fields={"nombre": Counts(tp=2, fn=1), "email": Counts(tp=1)})
    lines = format_report(report).splitlines()
    assert lines[-1] == "overall_f1=0.857"
    assert lines[1].split() == ["field", "tp", "fp", "fn", "precision", "recall", "f1"]
    assert lines[2].split() == ["nombre", "2", "0", "1", "1.000", "0.667", "0.800"]
    assert lines[-2].split()[:2] == ["overall", "(micro)"]


def test_load_dataset_reads_examples(tmp_path: Path) -> None:
    """A valid file loads into examples, skipping blank lines and keeping only labelled fields."""
    record = {
        "id": "a",
        "messages": HELLO,
        "expected": {"nombre": "Ana", "productos_interes": None},
    }
    path = write_lines(tmp_path, json.dumps(record), "", json.dumps({**record, "id": "b"}))
    loaded = load_dataset(path)
    assert [item.id for item in loaded] == ["a", "b"]
    assert loaded[0].expected == {"nombre": "Ana", "productos_interes": []}
    assert loaded[0].messages == (ChatMessage(role="user", content="hola"),)


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ('{"id": "b", "messages": [', "invalid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"messages": HELLO, "expected": {}}), "'id'"),
        (json.dumps({"id": "b", "messages": [], "expected": {}}), "'messages'"),
        (
            json.dumps({"id": "b", "messages": [{"role": "bot", "content": "x"}], "expected": {}}),
            "role",
        ),
        (json.dumps({"id": "b", "messages": HELLO}), "'expected'"),
        (json.dumps({"id": "b", "messages": HELLO, "expected": {"nombr": "x"}}), "nombr"),
        (
            json.dumps({"id": "b", "messages": HELLO, "expected": {"nivel_interes": 11}}),
            "nivel_interes",
        ),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_load_dataset_names_the_bad_line(tmp_path: Path, bad_line: str, fragment: str) -> None:
    """A bad line raises InputError with a one-line message naming the file, line and problem."""
    good = json.dumps({"id": "a", "messages": HELLO, "expected": {}})
    path = write_lines(tmp_path, good, bad_line)
    with pytest.raises(InputError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert f"{path}:2:" in message
    assert fragment in message
    assert "\n" not in message


def test_load_dataset_missing_file(tmp_path: Path) -> None:
    """A missing dataset file is an InputError, not a traceback."""
    with pytest.raises(InputError, match="cannot read dataset"):
        load_dataset(tmp_path / "nope.jsonl")
