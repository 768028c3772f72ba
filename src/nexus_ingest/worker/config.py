"""How a worker reads and paces itself, taken from the settings once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from nexus_ingest.extract.base import Extractor
from nexus_ingest.policy import ExtractionPolicy, policy_for
from nexus_ingest.retry import RetryPolicy
from nexus_ingest.settings import Settings
from nexus_ingest.spend import DEFAULT_BATCH_DISCOUNT, DEFAULT_PRICES, ModelPrices, price_table


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker reads and paces itself."""

    concurrency: int = 8
    batch_size: int = 400
    vt_s: int = 60
    poll_interval_s: float = 1.0
    shutdown_grace_s: float = 10.0
    archive: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # When an LLM extractor is called on a snapshot (now, later, in a batch); None: at once.
    policy: ExtractionPolicy | None = None
    prices: Mapping[str, ModelPrices] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    batch_discount: float = DEFAULT_BATCH_DISCOUNT
    batch_poll_s: float = 30.0
    # The time the policy judges by; None: the database's (tests move it by hand).
    policy_clock: Callable[[], datetime] | None = None


def worker_config(settings: Settings) -> WorkerConfig:
    """The worker's settings, taken from the global ones."""
    return WorkerConfig(
        concurrency=settings.worker_concurrency,
        batch_size=settings.worker_batch_size,
        vt_s=settings.worker_vt_s,
        poll_interval_s=settings.worker_poll_interval_s,
        shutdown_grace_s=settings.worker_shutdown_grace_s,
        archive=settings.archive_processed,
        retry=RetryPolicy(
            max_attempts=settings.max_attempts,
            base_s=settings.retry_base_s,
            cap_s=settings.retry_cap_s,
        ),
        policy=policy_for(settings),
        prices=price_table(settings.llm_prices),
        batch_discount=settings.llm_batch_discount,
        batch_poll_s=settings.llm_batch_poll_s,
    )


def read_size(config: WorkerConfig, extractor: Extractor, *, in_flight: int = 0) -> int:
    """How many messages to read at once: a batch for an offline extractor, but never more than
    an LLM worker can start at once, so none waits for a slot while its visibility timeout runs."""
    if extractor.in_process:
        return config.batch_size
    return max(1, min(config.batch_size, config.concurrency - in_flight))
