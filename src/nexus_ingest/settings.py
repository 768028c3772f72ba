"""All configuration, read once at the edges (CLI, app factory) from the environment and `.env`."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from nexus_ingest.errors import ConfigError
from nexus_ingest.spend import ModelPrices

ExtractorName = Literal["auto", "rules", "anthropic", "openai", "noop"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _region_code(value: str) -> str:
    """`es` or `ES`: the code is upper-cased before it is checked, so either case is accepted."""
    code = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise ValueError("expected two letters, an ISO 3166 region code such as ES")
    return code


PhoneRegion = Annotated[str, AfterValidator(_region_code)]


class Settings(BaseSettings):
    """Nexus settings; every field maps to an environment variable `NEXUS_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="NEXUS_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        use_attribute_docstrings=True,
        # `NAME=` means unset, so the default: .env.example shows some defaults as empty lines,
        # and a number or a port cannot be empty anyway. Applies to .env lines too.
        env_ignore_empty=True,
    )

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "NEXUS_DATABASE_URL")
    )
    """Postgres to use (also `DATABASE_URL`); unset: the embedded PostgreSQL"""
    data_dir: Path | None = None
    """where the embedded PostgreSQL keeps its data (default `~/.local/share/nexus`)"""
    host: str = "127.0.0.1"
    """address the HTTP service binds to"""
    port: int = Field(default=3000, ge=0, le=65535)
    """HTTP port of the service"""

    extractor: ExtractorName = "auto"
    """`auto` (anthropic with a key, else rules), `rules`, `anthropic`, `openai`, `noop`"""
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "NEXUS_ANTHROPIC_API_KEY")
    )
    """Claude API key (also `ANTHROPIC_API_KEY`)"""
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "NEXUS_ANTHROPIC_BASE_URL"),
    )
    """Claude API base URL (also `ANTHROPIC_BASE_URL`)"""
    anthropic_model: str = "claude-haiku-5-5"
    """Claude model used for extraction"""
    openai_base_url: str = "http://127.0.0.1:11434/v1"
    """OpenAI-compatible server (Ollama, vLLM, llama.cpp)"""
    openai_api_key: SecretStr = SecretStr("not-needed")
    """API key for the OpenAI-compatible server"""
    openai_model: str = "llama3.2"
    """model name on the OpenAI-compatible server"""
    llm_timeout_s: float = Field(default=30.0, gt=0)
    """timeout of one LLM call in all, seconds; an extraction (a call and its re-ask) is also
    cut at 0.9x NEXUS_WORKER_VT_S"""
    llm_max_tokens: int = Field(default=1024, gt=0)
    """output token limit of one LLM call"""
    llm_prompt_examples: bool = True
    """pad the cached prompt prefix with worked examples to the model's minimum cacheable length"""
    llm_prices: dict[str, ModelPrices] = Field(default_factory=dict)
    """JSON map: model (or prefix) to `{"input","cache_write","cache_read","output"}`, $ per million tokens"""
    llm_batch_discount: float = Field(default=0.5, gt=0, le=1)
    """share of the price a Message Batches answer costs"""
    llm_batch: bool = False
    """send backlog snapshots through Anthropic's Message Batches API, at half price"""
    llm_batch_min_age_s: float = Field(default=600.0, ge=0)
    """a snapshot waiting this long is backlog, sent in a batch when `NEXUS_LLM_BATCH` is on, seconds"""
    llm_batch_poll_s: float = Field(default=30.0, gt=0)
    """how often a worker asks whether its Message Batches have ended, seconds"""

    extract_first_within_s: float = Field(default=5.0, ge=0)
    """a new session's first LLM extraction waits for more turns at most this long after its first snapshot, seconds"""
    extract_interval_s: float = Field(default=30.0, ge=0)
    """while a visitor keeps typing, at most one LLM extraction of their session this often, seconds"""
    extract_quiet_s: float = Field(default=20.0, ge=0)
    """a session with no newer snapshot for this long gets its final state extracted, seconds"""
    extract_hot_at_once: bool = True
    """extract at once when a chat turns hot (contact details, or a purchase, demo or price intent)"""
    phone_region: PhoneRegion | None = None
    """region (ISO 3166, e.g. `ES`) of phone numbers without a country code when the chat names no place"""

    consumer_token: SecretStr | None = None
    """bearer token of the HTTP consumer endpoints; unset closes them"""
    admin_token: SecretStr | None = None
    """token of the dashboard and admin API; unset closes them"""
    admin_sign_in_per_minute: float = Field(default=10, ge=0)
    """failed dashboard sign-ins allowed per client IP per minute, after the burst (0: no limit)"""
    admin_sign_in_burst: int = Field(default=5, gt=0)
    """failed dashboard sign-ins a client IP may make at once before it must wait"""
    cors_origins: list[str] = Field(default_factory=list)
    """JSON list of browser origins allowed to post (for the widget on other sites)"""

    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    """largest accepted POST body, bytes"""
    max_header_bytes: int = Field(default=32 * 1024, gt=0)
    """largest request line and headers, bytes (more: 431 and the connection closed)"""
    request_timeout_s: float = Field(default=10.0, gt=0)
    """longest wait for a request's headers, then for its body, seconds (slower: 408)"""
    max_messages: int = Field(default=200, gt=0)
    """most turns in one snapshot"""
    max_content_chars: int = Field(default=8000, gt=0)
    """longest turn, characters"""
    max_id_chars: int = Field(default=200, gt=0)
    """longest fingerprint or sessionId"""

    rate_limit_ip_per_minute: float = Field(default=6000, ge=0)
    """POSTs per client IP per minute, counted by each API process (0: no limit)"""
    rate_limit_ip_burst: int = Field(default=200, gt=0)
    """burst allowed per client IP"""
    rate_limit_fingerprint_per_minute: float = Field(default=120, ge=0)
    """POSTs per fingerprint per minute, counted by each API process (0: no limit)"""
    rate_limit_fingerprint_burst: int = Field(default=30, gt=0)
    """burst allowed per fingerprint"""
    db_timeout_s: float = Field(default=0.9, gt=0)
    """how long the producer waits for the database before answering 503"""

    metrics_cache_s: float = Field(default=1.0, ge=0)
    """how long a count of the queue serves health checks, `/metrics` and the dashboard, seconds"""
    alert_queue_length: int = 100
    """health is `degraded` above this queue length"""
    alert_oldest_age_s: int = 300
    """health is `degraded` when the oldest message is older, seconds"""

    coalesce_window_s: float | None = Field(default=None, ge=0, le=3600)
    """seconds a snapshot waits for a newer one of its session (default 2 with an LLM, 0 offline)"""
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """a standalone worker serves /metrics, /healthz and /readyz on this port"""
    worker_concurrency: int = Field(default=8, gt=0)
    """LLM extractions in flight per worker (rules and noop run inline)"""
    worker_batch_size: int = Field(default=400, gt=0)
    """most messages read per round trip (an LLM worker reads no more than it has free slots)"""
    worker_vt_s: int = Field(default=60, gt=0)
    """visibility timeout and session lease of a read message, seconds; also the most a worker database call may last"""
    worker_poll_interval_s: float = Field(default=1.0, gt=0)
    """polling interval when no notification arrives, seconds"""
    worker_shutdown_grace_s: float = Field(default=10.0, ge=0)
    """how long a stopping worker lets in-flight work finish, seconds"""
    worker_nice: int = Field(default=0, ge=0, le=19)
    """lower the worker process's CPU priority by this much (`nexus up` sets 10: the API comes first)"""
    worker_synchronous_commit: bool = False
    """wait for the disk at each worker commit (off: a crash may redo <1 s of work, never lose it)"""
    archive_processed: bool = False
    """archive handled messages instead of deleting them"""
    max_attempts: int = Field(default=5, gt=0)
    """reads before a failing message is dead-lettered"""
    retry_base_s: float = Field(default=2.0, gt=0)
    """first back-off delay, doubled per attempt (with jitter), seconds"""
    retry_cap_s: float = Field(default=300.0, gt=0)
    """longest back-off delay, seconds"""

    fault_rate: float = Field(default=0.0, ge=0, le=1)
    """failure simulation: share of extractions that fail on purpose (0 = off)"""
    fault_mode: Literal["mixed", "retryable", "permanent", "timeout"] = "mixed"
    """failure simulation: `mixed`, `retryable`, `permanent` or `timeout`"""
    retention_archive_days: int = Field(default=7, ge=0)
    """days archived messages (and replayed dead letters) are kept"""
    retention_dead_letter_days: int = Field(default=30, ge=0)
    """days a dead letter nobody replayed or purged is kept, counted from its death"""
    retention_history_days: int = Field(default=90, ge=0)
    """days extraction history and message events are kept"""
    maintenance_interval_s: float = Field(default=3600.0, ge=0)
    """how often a worker runs retention when pg_cron does not (0 = never)"""
    db_pool_min: int = Field(default=2, gt=0)
    """smallest database pool of the service"""
    db_pool_max: int = Field(default=10, gt=0)
    """largest database pool of the service"""
    log_level: str = "INFO"
    """log level; personal data is never logged at INFO"""

    @field_validator("database_url")
    @classmethod
    def _parsable_database_url(cls, url: str | None) -> str | None:
        """Refuse a URL libpq cannot parse now, not at the first connection, and without quoting
        it: psycopg's own message repeats the URL, password and all."""
        if url is None:
            return None
        # Imported here: psycopg takes ~140 ms to import, which `nexus --version` need not pay.
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(url)
        except psycopg.Error:
            raise ValueError(
                "not a valid PostgreSQL connection URL (postgresql://USER:PASSWORD@HOST:PORT/DB)"
            ) from None
        if _is_supabase_transaction_mode(parts):
            raise ValueError(
                "port 6543 of Supabase's poolers is their transaction mode, which Nexus does not "
                "support (prepared statements, LISTEN, locks); use port 5432 of the same host "
                "(session mode), or the direct connection"
            )
        return url

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, level: str) -> str:
        name = level.strip().upper()
        if name == "WARN":
            name = "WARNING"  # the standard library's alias
        if name not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
        return name

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


# Supavisor (`aws-0-<region>.pooler.supabase.com`) and Supabase's dedicated PgBouncer
# (`db.<project-ref>.supabase.co`) both serve transaction mode on port 6543.
_SUPABASE_POOLER_HOST = re.compile(r"(^|\.)(pooler\.supabase\.com|supabase\.co)\.?$", re.IGNORECASE)


def _is_supabase_transaction_mode(parts: dict[str, typing.Any]) -> bool:
    """Whether a URL names a Supabase pooler on its transaction-mode port (6543); `nexus migrate`
    finds other poolers in transaction mode by how they behave (db.check_usable)."""
    hosts = str(parts.get("host") or "").split(",")
    ports = str(parts.get("port") or "5432").split(",")
    ports += [ports[-1]] * (len(hosts) - len(ports))  # libpq: one port serves every host
    return any(
        _SUPABASE_POOLER_HOST.search(host.strip()) and port.strip() == "6543"
        for host, port in zip(hosts, ports, strict=False)
    )


class InvalidSettings(ConfigError):
    """A setting's value is not valid; the message names its environment variable."""


def load_settings() -> Settings:
    """The settings from the environment and `.env`; a bad value is an `InvalidSettings` that
    names the environment variable to fix (what a user sets), never the value (maybe a secret)."""
    # `from None`: the original errors hold the values read, which may be secrets.
    try:
        return Settings()
    except ValidationError as exc:
        raise InvalidSettings(f"invalid configuration: {_first_problem(exc)}") from None
    except SettingsError as exc:
        raise InvalidSettings(f"invalid configuration: {_undecodable(exc)}") from None


def env_variable(field_name: str) -> str:
    """The environment variable that sets a field: its short alias when it has one
    (`DATABASE_URL`), else `NEXUS_<FIELD>`."""
    field = Settings.model_fields.get(field_name)
    alias = field.validation_alias if field else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"NEXUS_{field_name.upper()}"


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    first, *inner = [str(part) for part in error["loc"]] or ["settings"]
    # A field set through an alias is reported under it (DATABASE_URL); map the rest.
    where = first if first.isupper() else env_variable(first)
    inside = f" {'.'.join(inner)}:" if inner else ""
    reason = error["msg"].removeprefix("Value error, ")
    return f"{where}:{inside} {reason}"


_FIELD_OF_SETTINGS_ERROR = re.compile(r'field "(?P<field>\w+)"')


def _undecodable(exc: SettingsError) -> str:
    """pydantic-settings' error for a value that is not JSON names the field, not the variable,
    and does not say what was expected."""
    match = _FIELD_OF_SETTINGS_ERROR.search(str(exc))
    if match is None:
        return str(exc)
    field = match["field"]
    cause = exc.__cause__
    detail = (
        f" ({cause.msg}, column {cause.colno})" if isinstance(cause, json.JSONDecodeError) else ""
    )
    return f"{env_variable(field)}: not valid JSON{detail}; expected {_json_kind(field)}"


def _json_kind(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    origin = typing.get_origin(field.annotation) if field else None
    if origin is list:
        return 'a JSON list, e.g. ["https://shop.example"]'
    if origin is dict:
        return "a JSON object"
    return "JSON"
