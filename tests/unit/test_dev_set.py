"""The labelled dev set: its shape, and the rules extractor's score on it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nexus_ingest.evaluate import Example, evaluate, format_report, load_dataset
from nexus_ingest.extract.rules import RulesExtractor

DEV_SET = Path(__file__).resolve().parents[2] / "datasets" / "dev.jsonl"
MIN_CONVERSATIONS = 60
MIN_OVERALL_F1 = 0.85


def dev_examples() -> list[Example]:
    """The dev set, loaded with the same loader `nexus eval` uses."""
    return load_dataset(DEV_SET)


def test_dev_set_is_large_and_bilingual() -> None:
    """The dev set has at least 60 conversations with unique ids, in Spanish and in English."""
    examples = dev_examples()
    languages = Counter(example.expected.get("idioma") for example in examples)
    assert len(examples) >= MIN_CONVERSATIONS
    assert len({example.id for example in examples}) == len(examples)
    assert min(languages["es"], languages["en"]) >= len(examples) // 3


def test_dev_set_contains_the_seed_conversation() -> None:
    """The seed's 'Me llamo Carlos' chat is in the dev set with its labels."""
    seeds = [
        example
        for example in dev_examples()
        if any("Me llamo Carlos" in message.content for message in example.messages)
    ]
    assert len(seeds) == 1
    expected = seeds[0].expected
    assert (expected["nombre"], expected["intencion"], expected["idioma"]) == (
        "Carlos",
        "informacion",
        "es",
    )
    assert expected["productos_interes"] == ["paquetes"]


async def test_rules_extractor_scores_on_dev_set() -> None:
    """The rules extractor reaches an overall F1 of at least 0.85 on the dev set."""
    report = await evaluate(dev_examples(), RulesExtractor())
    assert report.overall.f1 >= MIN_OVERALL_F1, format_report(report)
