"""The rules extractor's pattern helpers: a regrouped alternation matches exactly what it did."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from nexus_ingest.evaluate import load_dataset
from nexus_ingest.extract import rules

DEV_SET = Path(__file__).resolve().parents[2] / "datasets" / "dev.jsonl"

# Word alternations shaped like the extractor's, with the cases regrouping must respect: a
# leading group, a quantified group, a lookbehind, alternatives sharing a first letter on both
# sides of one that does not begin with a letter, one-letter and prefix alternatives.
ALTERNATIONS = (
    r"\b(?:ax|[a-z]+|ab)",
    r"\b(?:ab|[a-z]+|ac)",
    r"\b(?:ab|a\w*|abc)\b",
    r"\b(?:(?:ab|a)c|ad|(?:xy)?z|b(?!c)\w+|ba)",
    r"\b(?:(?:the|la|el|to\s+the)\s+(?:ai|ia|bot)\b|tell\s+me|t\w+s|(?<!la\s)mañana|m)",
    r"\b(?:no\s+puedo\s+(?:entrar|pagar)|error\w*|no\s+funciona\w*|nada|(?:can't|cannot)\s+log)\b",
)
WORDS = rules._word_set(
    "a ab abc abd ac ad ax b ba bc bcd the la el to ai ia bot tell me tells mañana m no puedo "
    "entrar pagar error errores funciona nada can't cannot log xy z xyz c"
)


def texts(count: int = 400, seed: int = 0) -> list[str]:
    """Random phrases of the alternations' own words, where their branches compete."""
    rng = random.Random(seed)
    words = sorted(WORDS)
    return [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(count)]


def matches(pattern: re.Pattern[str], text: str) -> list[tuple[tuple[int, int], ...]]:
    return [
        tuple(m.span(group) for group in range(pattern.groups + 1)) for m in pattern.finditer(text)
    ]


@pytest.mark.parametrize("source", ALTERNATIONS)
def test_regrouped_alternation_finds_the_same_matches(source: str) -> None:
    """Every match (where, and what each group took) is the same after regrouping."""
    plain, grouped = re.compile(source), rules._by_first_letter(source)
    for text in texts():
        assert matches(grouped, text) == matches(plain, text), text


def test_alternatives_are_grouped_behind_their_first_letter() -> None:
    """Alternatives are regrouped by letter, a leading group spread over what follows it, and
    an alternative that does not begin with a letter keeps its place between the others."""
    assert rules._by_first_letter(r"\b(?:ab|cd|ae|[x]y|af)").pattern == (
        r"\b(?:a(?:b|e)|cd|[x]y|af)"
    )
    assert rules._by_first_letter(r"\b(?:(?:ab|cd)e|(?:x)?y)\b").pattern == (
        r"\b(?:abe|cde|(?:x)?y)\b"
    )


def test_a_pattern_that_is_not_a_word_alternation_is_refused() -> None:
    """Only `\\b(?:...)` patterns are regrouped; anything else is a mistake in the module."""
    with pytest.raises(ValueError, match="not a word alternation"):
        rules._by_first_letter(r"(?:ab|cd)")
    with pytest.raises(ValueError, match="not a word alternation"):
        rules._union(re.compile(r"\b(?:ab)\b"), re.compile(r"\b(?:cd)\bx"))


def test_union_matches_exactly_when_one_of_its_parts_does() -> None:
    """The one-scan test for the rarer intent signals agrees with scanning for each of them,
    on every turn of the dev set and on phrases made of their own words."""
    parts = (
        rules._COMPLAINT_RE,
        rules._SUPPORT_RE,
        rules._OTHER_RE,
        rules._BROWSING_RE,
        rules._DECLINE_RE,
        rules._STRONG_BUY_RE,
        rules._CONTACT_RE,
        rules._URGENT_RE,
    )
    turns = [m.content.lower() for e in load_dataset(DEV_SET) for m in e.messages]
    cues = [
        "quiero una refund ya",
        "no puedo acceder a mi cuenta",
        "call me asap",
        "solo estoy mirando",
        "no me interesa, gracias",
        "tenemos vacantes?",
        "quiero comprar hoy mismo",
        "nothing here",
    ]
    assert any(rules._RARE_SIGNAL_RE.search(text) for text in cues)
    assert not all(rules._RARE_SIGNAL_RE.search(text) for text in cues)
    for text in [*turns, *cues]:
        expected = any(part.search(text) for part in parts)
        assert (rules._RARE_SIGNAL_RE.search(text) is not None) == expected, text


def test_quick_checks_accept_whatever_their_pattern_finds() -> None:
    """The cheap tests run before a costlier pattern never turn away a sentence it matches, on
    every turn of the dev set and on phrases of the patterns' own words, case and all."""
    turns = [m.content for e in load_dataset(DEV_SET) for m in e.messages]
    rng = random.Random(1)
    words = sorted(
        rules._word_set(
            "mi my our su sus jefa colega co-worker partner his her email phone número telefono de "
            "parte on behalf of in en from at desde near Madrid ıN deſde İn DE FROM arroba [at] (dot) "
            "soy I'm Dan Ito , Acme"
        )
    )
    phrases = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(2000)]
    for text in [*turns, *phrases]:
        low = rules._lower(text)
        if rules._THIRD_PARTY_RE.search(low):
            assert rules._THIRD_PARTY_CUE_RE.search(low), text
        if rules._PLACE_CUE_RE.search(text):
            assert rules._PLACE_HINT_RE.search(low), text
        if rules._AT_CUE_RE.search(low):
            assert "at" in low or "arroba" in low, text
        if rules._FIRM_AFTER_CUE_RE.search(low):
            assert rules._firm_after(low), text
        expected = any(cue.search(low) for _, cue in rules._COMPANY_PATTERNS)
        assert (rules._COMPANY_CUE_RE.search(low) is not None) == expected, text


def test_words_are_what_the_word_pattern_finds() -> None:
    """Splitting on spaces before the word pattern finds the same words, in the same order."""
    turns = [m.content for e in load_dataset(DEV_SET) for m in e.messages]
    tricky = ["¡Hola!, ¿qué tal?", "I'm a'b'c 'quoted' o’neill", "x² ½ 3d _a_ Σ ΟΔΟΣ", "a\tb\nc"]
    for text in [*turns, *tricky]:
        assert rules._words(text) == rules._WORD_RE.findall(text.lower()), text
