"""Cost accounting: prices per model, the cost of each kind of token, the /metrics counters."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from nexus_ingest.extract.base import Extraction
from nexus_ingest.metrics import record_spend
from nexus_ingest.models import Prospect
from nexus_ingest.settings import Settings
from nexus_ingest.spend import (
    DEFAULT_PRICES,
    ModelPrices,
    SpendRow,
    TokenCounts,
    cost_of,
    extraction_cost,
    extraction_cost_usd,
    price_table,
    prices_for,
    token_counts,
    total_spend,
    usd,
)

HAIKU_5_5 = DEFAULT_PRICES["claude-haiku-5-5"]


def claude(model: str | None = "claude-haiku-5-5", *, batch: bool = False) -> Extraction:
    """An extraction of a 5,000-token prompt: 4,000 read, 600 written, 400 plain; 200 out."""
    return Extraction(
        prospect=Prospect(),
        extractor="anthropic",
        model=model,
        input_tokens=5000,
        output_tokens=200,
        cached_tokens=4000,
        cache_write_tokens=600,
        batch=batch,
    )


def test_an_extraction_splits_its_prompt_into_billed_kinds() -> None:
    """input_tokens is the whole prompt; the plain part is what cache reads and writes leave."""
    extraction = claude()
    assert extraction.uncached_input_tokens == 400
    assert extraction.cache_read_tokens == 4000
    assert token_counts(extraction) == TokenCounts(
        input=400, cache_write=600, cache_read=4000, output=200
    )


def test_haiku_defaults_follow_the_documented_multipliers() -> None:
    """The current Haikus' writes are 1.25x input, reads 0.1x, output 5x (Claude 3 Haiku's
    list prices round differently)."""
    for model in ("claude-haiku-5-5", "claude-haiku-4-5", "claude-3-5-haiku"):
        prices = DEFAULT_PRICES[model]
        assert prices.cache_write == pytest.approx(1.25 * prices.input)
        assert prices.cache_read == pytest.approx(0.1 * prices.input)
        assert prices.output == pytest.approx(5 * prices.input)


def test_cost_is_tokens_times_price_per_million() -> None:
    """Each kind costs its count times its price; the total is their sum."""
    cost = cost_of(TokenCounts(input=1_000_000, cache_read=2_000_000, output=100_000), HAIKU_5_5)
    assert (cost.input, cost.cache_read, cost.cache_write) == pytest.approx((0.10, 0.02, 0.0))
    assert cost.output == pytest.approx(0.05)
    assert cost.total == pytest.approx(0.17)


def test_a_batch_answer_costs_the_batch_discount() -> None:
    """Half price by default, any configured share otherwise."""
    full = extraction_cost(claude(), DEFAULT_PRICES)
    half = extraction_cost(claude(batch=True), DEFAULT_PRICES)
    quarter = extraction_cost(claude(batch=True), DEFAULT_PRICES, batch_discount=0.25)
    assert full is not None and half is not None and quarter is not None
    assert (half.total, quarter.total) == pytest.approx((full.total / 2, full.total / 4))


def test_dated_model_ids_use_their_family_price_and_unknown_models_none() -> None:
    """claude-haiku-4-5-20251001 is priced as claude-haiku-4-5; an unknown model is unpriced."""
    assert (
        prices_for("claude-haiku-4-5-20251001", DEFAULT_PRICES)
        == DEFAULT_PRICES["claude-haiku-4-5"]
    )
    assert prices_for("llama3.2", DEFAULT_PRICES) is None
    assert prices_for(None, DEFAULT_PRICES) is None
    assert extraction_cost(claude("llama3.2"), DEFAULT_PRICES) is None


def test_configured_prices_come_from_json_and_override_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NEXUS_LLM_PRICES is a JSON map merged over the built-in table."""
    monkeypatch.setenv(
        "NEXUS_LLM_PRICES",
        '{"claude-haiku-5-5": {"input": 0.2, "cache_write": 0.25, "cache_read": 0.02, '
        '"output": 1.0}, "llama3.2": {"input": 0, "cache_write": 0, "cache_read": 0, '
        '"output": 0}}',
    )
    table = price_table(Settings(_env_file=None).llm_prices)
    assert table["claude-haiku-5-5"] == ModelPrices(0.2, 0.25, 0.02, 1.0)
    assert table["claude-haiku-4-5"] == DEFAULT_PRICES["claude-haiku-4-5"]
    assert extraction_cost(claude("llama3.2"), table) is not None


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_record_spend_counts_tokens_and_dollars_by_model_and_kind() -> None:
    """The counters grow by the extraction's tokens and cost; an offline one adds nothing."""
    model = "claude-haiku-5-5-metrics-test"
    table = {model: HAIKU_5_5}
    record_spend(claude(model), table)
    record_spend(claude(model, batch=True), table)
    record_spend(Extraction(prospect=Prospect(), extractor="rules"), table)
    tokens = {
        kind: _sample("nexus_llm_billed_tokens_total", model=model, kind=kind)
        for kind in ("input", "cache_write", "cache_read", "output")
    }
    assert tokens == {"input": 800, "cache_write": 1200, "cache_read": 8000, "output": 400}
    full = cost_of(TokenCounts(input=400, cache_write=600, cache_read=4000, output=200), HAIKU_5_5)
    spent = sum(
        _sample("nexus_llm_cost_usd_total", model=model, kind=kind)
        for kind in ("input", "cache_write", "cache_read", "output")
    )
    assert spent == pytest.approx(full.total * 1.5)


def test_an_extraction_costs_its_total_or_nothing_known() -> None:
    """A history row records the total cost; a model without a price records none (unknown,
    not zero), and so does a configured price that is not a number."""
    assert extraction_cost_usd(claude(), DEFAULT_PRICES) == pytest.approx(
        (400 * 0.10 + 600 * 0.125 + 4000 * 0.01 + 200 * 0.50) / 1_000_000
    )
    assert extraction_cost_usd(claude("house-model"), DEFAULT_PRICES) is None
    broken = {"claude-haiku-5-5": ModelPrices(float("inf"), 0, 0, 0)}
    assert extraction_cost_usd(claude(), broken) is None


def test_spend_rows_add_up_and_dollars_read_well() -> None:
    """Groups of extractions sum kind by kind; money shows cents from a dollar up and
    millionths below a cent."""
    day = SpendRow(
        "m", extractions=2, input=10, cache_write=20, cache_read=30, output=5, cost_usd=0.5
    )
    other = SpendRow("n", extractions=1, batched=1, output=7, cost_usd=0.25, unpriced=1)
    total = total_spend([day, other], "total")
    assert (total.model, total.extractions, total.batched, total.output) == ("total", 3, 1, 12)
    assert (total.cost_usd, total.unpriced, day.tokens) == (0.75, 1, 65)
    assert [usd(v) for v in (1234.5, 0.75, 0.0123456, 0.000412, 0.0)] == [
        "$1,234.50",
        "$0.7500",
        "$0.0123",
        "$0.000412",
        "$0",
    ]
