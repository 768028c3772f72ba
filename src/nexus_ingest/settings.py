"""All configuration, read once at the edges (CLI, app factory) from the environment and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ExtractorName = Literal["auto", "rules", "anthropic", "openai", "noop"]


class Settings(BaseSettings):
    """Nexus settings; every field maps to an environment variable `NEXUS_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="NEXUS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "NEXUS_DATABASE_URL")
    )
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=0, le=65535)

    extractor: ExtractorName = "auto"
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "NEXUS_ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "NEXUS_ANTHROPIC_BASE_URL"),
    )
    anthropic_model: str = "claude-haiku-5-5"
    openai_base_url: str = "http://127.0.0.1:11434/v1"
    openai_api_key: SecretStr = SecretStr("not-needed")
    openai_model: str = "llama3.2"
    llm_timeout_s: float = Field(default=30.0, gt=0)
    llm_max_tokens: int = Field(default=1024, gt=0)

    consumer_token: SecretStr | None = None
    admin_token: SecretStr | None = None
    cors_origins: list[str] = Field(default_factory=list)

    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    max_messages: int = Field(default=200, gt=0)
    max_content_chars: int = Field(default=8000, gt=0)
    max_id_chars: int = Field(default=200, gt=0)

    rate_limit_ip_per_minute: float = Field(default=6000, ge=0)
    rate_limit_ip_burst: int = Field(default=200, gt=0)
    rate_limit_fingerprint_per_minute: float = Field(default=120, ge=0)
    rate_limit_fingerprint_burst: int = Field(default=30, gt=0)
    db_timeout_s: float = Field(default=0.9, gt=0)

    alert_queue_length: int = 100
    alert_oldest_age_s: int = 300

    coalesce_window_s: float | None = Field(default=None, ge=0, le=3600)
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    worker_concurrency: int = Field(default=8, gt=0)
    worker_batch_size: int = Field(default=50, gt=0)
    worker_vt_s: int = Field(default=60, gt=0)
    worker_poll_interval_s: float = Field(default=1.0, gt=0)
    worker_shutdown_grace_s: float = Field(default=10.0, ge=0)
    archive_processed: bool = False
    max_attempts: int = Field(default=5, gt=0)
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_cap_s: float = Field(default=300.0, gt=0)

    fault_rate: float = Field(default=0.0, ge=0, le=1)
    fault_mode: Literal["mixed", "retryable", "permanent", "timeout"] = "mixed"
    retention_archive_days: int = Field(default=7, ge=0)
    retention_history_days: int = Field(default=90, ge=0)
    maintenance_interval_s: float = Field(default=3600.0, ge=0)
    db_pool_min: int = Field(default=2, gt=0)
    db_pool_max: int = Field(default=10, gt=0)
    log_level: str = "INFO"

    def resolved_extractor(self) -> ExtractorName:
        """The extractor in use: `auto` means Anthropic with a key, rules without."""
        if self.extractor != "auto":
            return self.extractor
        return "anthropic" if self.anthropic_api_key else "rules"

    def resolved_coalesce_window(self) -> float:
        """Seconds a snapshot waits for a newer one of its session before it is extracted.

        Unset, LLM extractors wait 2 s (a burst of snapshots costs one call) and the offline
        extractors none (they cost nothing, so the row appears at once).
        """
        if self.coalesce_window_s is not None:
            return self.coalesce_window_s
        return 0.0 if self.resolved_extractor() in ("rules", "noop") else 2.0
