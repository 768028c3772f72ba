"""What LLM extractions cost: prices per model, and the money each kind of token took.

Providers bill four kinds of tokens at different prices: plain input, cache writes, cache reads
and output; a Message Batches answer costs a share (half) of all four. `cost_of` is the pure
sum, `prices_for` finds a model's prices in a table whose keys are model ids or their prefixes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal, Protocol

TokenKind = Literal["input", "cache_write", "cache_read", "output"]
TOKEN_KINDS: tuple[TokenKind, ...] = ("input", "cache_write", "cache_read", "output")
PER_MILLION = 1_000_000


@dataclass(frozen=True)
class ModelPrices:
    """US dollars per million tokens of each kind."""

    input: float
    cache_write: float
    cache_read: float
    output: float


# Anthropic's list prices for prompts under 100,000 tokens (Nexus's stay far below: a
# transcript is capped at 60,000 characters). 5-minute cache writes cost 1.25x input, reads
# 0.1x; a longer model id (a dated snapshot) uses its family's prices.
DEFAULT_PRICES: dict[str, ModelPrices] = {
    "claude-haiku-5-5": ModelPrices(input=0.10, cache_write=0.125, cache_read=0.01, output=0.50),
    "claude-haiku-4-5": ModelPrices(input=1.00, cache_write=1.25, cache_read=0.10, output=5.00),
    "claude-3-5-haiku": ModelPrices(input=0.80, cache_write=1.00, cache_read=0.08, output=4.00),
    "claude-3-haiku": ModelPrices(input=0.25, cache_write=0.30, cache_read=0.03, output=1.25),
}
DEFAULT_BATCH_DISCOUNT = 0.5


class Billed(Protocol):
    """What an extraction tells about its bill (`nexus_ingest.extract.base.Extraction`)."""

    @property
    def model(self) -> str | None: ...
    @property
    def uncached_input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def batch(self) -> bool: ...


@dataclass(frozen=True)
class TokenCounts:
    """Tokens of each kind one extraction was billed for."""

    input: int = 0
    cache_write: int = 0
    cache_read: int = 0
    output: int = 0

    def of(self, kind: TokenKind) -> int:
        """The count of one kind."""
        return int(getattr(self, kind))


@dataclass(frozen=True)
class Cost:
    """Money per kind of token, in US dollars."""

    input: float = 0.0
    cache_write: float = 0.0
    cache_read: float = 0.0
    output: float = 0.0

    @property
    def total(self) -> float:
        """The sum of every kind."""
        return self.input + self.cache_write + self.cache_read + self.output

    def of(self, kind: TokenKind) -> float:
        """The money one kind took."""
        return float(getattr(self, kind))


def token_counts(extraction: Billed) -> TokenCounts:
    """The billed kinds of an extraction's tokens."""
    return TokenCounts(
        input=extraction.uncached_input_tokens,
        cache_write=extraction.cache_write_tokens,
        cache_read=extraction.cache_read_tokens,
        output=extraction.output_tokens,
    )


def cost_of(
    tokens: TokenCounts,
    prices: ModelPrices,
    *,
    batch: bool = False,
    batch_discount: float = DEFAULT_BATCH_DISCOUNT,
) -> Cost:
    """What `tokens` cost at `prices`; a batch answer pays `batch_discount` of it."""
    share = (batch_discount if batch else 1.0) / PER_MILLION
    return Cost(
        input=tokens.input * prices.input * share,
        cache_write=tokens.cache_write * prices.cache_write * share,
        cache_read=tokens.cache_read * prices.cache_read * share,
        output=tokens.output * prices.output * share,
    )


def price_table(overrides: Mapping[str, ModelPrices]) -> dict[str, ModelPrices]:
    """The built-in prices with the configured ones over them."""
    return {**DEFAULT_PRICES, **overrides}


def prices_for(model: str | None, table: Mapping[str, ModelPrices]) -> ModelPrices | None:
    """The prices of `model`: its own entry, else the longest key it starts with; None if
    nothing matches (an unpriced model's tokens are still counted, its cost is not)."""
    if not model:
        return None
    if model in table:
        return table[model]
    families = [key for key in table if model.startswith(key)]
    return table[max(families, key=len)] if families else None


def extraction_cost(
    extraction: Billed,
    table: Mapping[str, ModelPrices],
    batch_discount: float = DEFAULT_BATCH_DISCOUNT,
) -> Cost | None:
    """What one extraction cost, or None when its model has no price."""
    prices = prices_for(extraction.model, table)
    if prices is None:
        return None
    return cost_of(
        token_counts(extraction), prices, batch=extraction.batch, batch_discount=batch_discount
    )


def extraction_cost_usd(
    extraction: Billed,
    table: Mapping[str, ModelPrices],
    batch_discount: float = DEFAULT_BATCH_DISCOUNT,
) -> float | None:
    """What one extraction cost in all, as a history row records it; None when its model has
    no price (or a configured price is not a finite number)."""
    cost = extraction_cost(extraction, table, batch_discount)
    if cost is None or not math.isfinite(cost.total):
        return None
    return cost.total


@dataclass(frozen=True)
class SpendRow:
    """Tokens billed by kind and their cost for a group of extractions: one model on one day,
    or in one session. `unpriced` counts extractions of a model without a price."""

    model: str
    extractions: int = 0
    batched: int = 0
    input: int = 0
    cache_write: int = 0
    cache_read: int = 0
    output: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    day: date | None = None
    session_id: str | None = None

    @property
    def tokens(self) -> int:
        """Every billed token, whatever its kind."""
        return self.input + self.cache_write + self.cache_read + self.output


def total_spend(rows: Sequence[SpendRow], label: str = "all models") -> SpendRow:
    """The sum of several groups, as one row named `label`."""
    return SpendRow(
        model=label,
        extractions=sum(r.extractions for r in rows),
        batched=sum(r.batched for r in rows),
        input=sum(r.input for r in rows),
        cache_write=sum(r.cache_write for r in rows),
        cache_read=sum(r.cache_read for r in rows),
        output=sum(r.output for r in rows),
        cost_usd=sum(r.cost_usd for r in rows),
        unpriced=sum(r.unpriced for r in rows),
    )


def usd(amount: float) -> str:
    """Money in US dollars: to the cent from a dollar up, else to a ten-thousandth, or a
    millionth below a cent (one extraction costs a fraction of a cent)."""
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount >= 0.01:
        return f"${amount:.4f}"
    return f"${amount:.6f}" if amount else "$0"
