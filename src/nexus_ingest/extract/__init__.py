"""Extractors: one protocol, one module per implementation, chosen by configuration."""

from __future__ import annotations

from typing import assert_never

from nexus_ingest.errors import ConfigError
from nexus_ingest.extract.base import Extraction, Extractor
from nexus_ingest.extract.metered import metered
from nexus_ingest.settings import Settings
from nexus_ingest.spend import price_table

__all__ = ["Extraction", "Extractor", "build_extractor"]


def build_extractor(settings: Settings) -> Extractor:
    """The extractor `settings` ask for, with its client built once for the process, metered
    (calls, tokens, and their cost at the configured prices).

    With `NEXUS_FAULT_RATE` above zero it is wrapped to fail on purpose, and says so loudly;
    the simulated failures are counted like real ones.
    """
    extractor = _build(settings)
    if settings.fault_rate > 0:
        import structlog

        from nexus_ingest.extract.faults import FaultyExtractor

        structlog.get_logger("nexus").warning(
            "extractor.failure_simulation",
            detail="FAILURE SIMULATION ON: the extractor fails on purpose",
            fault_rate=settings.fault_rate,
            fault_mode=settings.fault_mode,
        )
        extractor = FaultyExtractor(extractor, rate=settings.fault_rate, mode=settings.fault_mode)
    return metered(extractor, price_table(settings.llm_prices), settings.llm_batch_discount)


def _build(settings: Settings) -> Extractor:
    # Imports are local so that choosing `rules` or `noop` never loads an LLM SDK.
    choice = settings.resolved_extractor()
    if choice == "rules":
        from nexus_ingest.extract.rules import RulesExtractor

        return RulesExtractor(phone_region=settings.phone_region)
    if choice == "noop":
        from nexus_ingest.extract.noop import NoopExtractor

        return NoopExtractor()
    if choice == "anthropic":
        return _anthropic(settings)
    if choice == "openai":
        return _openai(settings)
    if choice == "auto":
        raise ConfigError("resolved_extractor() returned 'auto'")
    assert_never(choice)


def _anthropic(settings: Settings) -> Extractor:
    try:
        from nexus_ingest.extract.anthropic import AnthropicExtractor
    except ModuleNotFoundError as exc:
        raise _sdk_missing(exc, "anthropic") from exc

    if settings.anthropic_api_key is None:
        raise ConfigError("the anthropic extractor needs ANTHROPIC_API_KEY")
    return AnthropicExtractor(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        model=settings.anthropic_model,
        timeout_s=settings.llm_timeout_s,
        max_tokens=settings.llm_max_tokens,
        prompt_examples=settings.llm_prompt_examples,
        phone_region=settings.phone_region,
    )


def _openai(settings: Settings) -> Extractor:
    try:
        from nexus_ingest.extract.openai import OpenAIExtractor
    except ModuleNotFoundError as exc:
        raise _sdk_missing(exc, "openai") from exc

    return OpenAIExtractor(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get_secret_value(),
        model=settings.openai_model,
        timeout_s=settings.llm_timeout_s,
        max_tokens=settings.llm_max_tokens,
        phone_region=settings.phone_region,
    )


def _sdk_missing(exc: ModuleNotFoundError, sdk: str) -> Exception:
    """The provider's SDK is an extra: say which one to install (any other missing module stays)."""
    if (exc.name or "").partition(".")[0] != sdk:
        return exc
    return ConfigError(
        f"the {sdk} extractor needs the {sdk} SDK: pip install 'nexus-ingest[{sdk}]'"
    )
