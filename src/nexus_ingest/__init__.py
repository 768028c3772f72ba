"""Nexus: asynchronous lead ingestion on Postgres and PGMQ."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nexus-ingest")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

QUEUE_NAME = "nexus-prospect-ingestion"
DLQ_NAME = "nexus-prospect-ingestion-dlq"

__all__ = ["DLQ_NAME", "QUEUE_NAME", "__version__"]
