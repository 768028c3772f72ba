"""Nexus: asynchronous lead ingestion on Postgres and PGMQ."""

from typing import Any

QUEUE_NAME = "nexus-prospect-ingestion"
DLQ_NAME = "nexus-prospect-ingestion-dlq"

__all__ = ["DLQ_NAME", "QUEUE_NAME", "__version__"]


def __getattr__(name: str) -> Any:
    # Read on first use: package metadata costs a worker ~40 ms of start-up it does not need.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("nexus-ingest")
        except PackageNotFoundError:  # running from a source tree that was never installed
            return "0.0.0"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
