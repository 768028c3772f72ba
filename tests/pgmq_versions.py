"""pgmq as a Supabase project has it (the 1.4.4 and 1.5.1 extensions, in the shared fixtures)
and as the `pgmq` package ships it (1.13, SQL-only or built into an extension), put within
reach of one test database."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from pgmq.install import get_embedded_install_sql, get_embedded_sql_version
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
_FIXTURES = Path("shared", "fixtures", "pgmq-supabase")
BUNDLED = get_embedded_sql_version()  # "1.13.0"


def fixtures() -> Path:
    """The upstream extension files beside the repository (`../shared/fixtures/pgmq-supabase`,
    never copied in), or a skip saying why the test cannot run here. A worktree looks beside its
    main checkout, a local clone beside the repository it was cloned from, and
    NEXUS_PGMQ_FIXTURES names the folder outright."""
    named = os.environ.get("NEXUS_PGMQ_FIXTURES")
    candidates = [Path(named)] if named else []
    candidates += [ROOT.parent / _FIXTURES, _main_checkout().parent / _FIXTURES]
    candidates += [origin.parent / _FIXTURES for origin in _local_origin()]
    for folder in candidates:
        if (folder / "pgmq.control").is_file():
            return folder
    pytest.skip(f"pgmq extension fixtures not found at {' or '.join(map(str, candidates))}")


def _main_checkout() -> Path:
    """The repository's main working tree: ROOT, or the one a `git worktree` at ROOT belongs to."""
    marker = ROOT / ".git"
    if marker.is_file():  # "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(marker.read_text().removeprefix("gitdir:").strip())
        return gitdir.parents[2]
    return ROOT


def _local_origin() -> list[Path]:
    """The repository this one was cloned from, when that is a folder on this machine."""
    try:
        url = subprocess.run(
            ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return []
    path = Path(url.removeprefix("file://"))
    return [path.resolve()] if url and path.is_dir() else []


def create_extension(url: str, version: str) -> None:
    """`CREATE EXTENSION pgmq VERSION version`, as enabling Supabase Queues does."""
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("CREATE EXTENSION pgmq VERSION {}").format(sql.Literal(version)))


def install_sql_only(url: str) -> None:
    """The SQL-only PGMQ of the `pgmq` package, as `nexus migrate` installs it on a bare server."""
    with psycopg.connect(url) as conn:
        conn.execute(get_embedded_install_sql())  # type: ignore[arg-type]


@contextmanager
def offered(
    admin_url: str, database: str, *, with_bundled: bool = False, only_1_4_4: bool = False
) -> Iterator[None]:
    """Make `database` see pgmq 1.4.4 and 1.5.1 (and the bundled 1.13 when asked) as extensions;
    `only_1_4_4`: an older Supabase image, offering 1.4.4 and no update.

    PostgreSQL 18 looks for extensions along `extension_control_path`, set here for this
    database alone. Older servers have one extension folder, which the fixtures are copied into
    (as root in CI); the 1.13 script copied there is removed again afterwards, so other
    databases on the server keep the choice a Supabase project has.
    """
    source = fixtures()
    major, sharedir = _server(admin_url)
    if major >= 18:
        with _private_folder(source, with_bundled, only_1_4_4) as folder:
            _set_control_path(admin_url, database, folder)
            yield
        return
    if only_1_4_4:
        pytest.skip(f"PostgreSQL {major} has one extension folder for all its databases")
    with _shared_folder(source, sharedir / "extension", with_bundled):
        yield


def _server(admin_url: str) -> tuple[int, Path]:
    """The server's major version and its SHAREDIR."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        sharedir = conn.execute("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'").fetchone()
    assert version is not None and sharedir is not None
    return int(version[0]) // 10000, Path(sharedir[0])


def offers_pgmq(url: str) -> bool:
    """Whether the database sees any pgmq extension at all."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pgmq'"
        ).fetchone()
    return bool(row and row[0])


@contextmanager
def _private_folder(source: Path, with_bundled: bool, only_1_4_4: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="nexus-pgmq-"))
    try:
        extension = folder / "extension"
        extension.mkdir()
        names = (
            ["pgmq.control", "pgmq--1.4.4.sql"]
            if only_1_4_4
            else [p.name for p in source.glob("pgmq*")]
        )
        for name in names:
            shutil.copyfile(source / name, extension / name)
        if only_1_4_4:
            control = extension / "pgmq.control"
            control.write_text(control.read_text().replace("'1.5.1'", "'1.4.4'"))
        if with_bundled:
            (extension / f"pgmq--{BUNDLED}.sql").write_text(get_embedded_install_sql())
        for path in [folder, extension, *extension.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # the server runs as another user
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _set_control_path(admin_url: str, database: str, folder: Path) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET extension_control_path = {}").format(
                sql.Identifier(database), sql.Literal(f"{folder}:$system")
            )
        )


@contextmanager
def _shared_folder(source: Path, extension: Path, with_bundled: bool) -> Iterator[None]:
    bundled = extension / f"pgmq--{BUNDLED}.sql"
    try:
        for path in source.glob("pgmq*"):
            target = extension / path.name
            if not target.exists() or target.read_bytes() != path.read_bytes():
                shutil.copyfile(path, target)
        if with_bundled:
            bundled.write_text(get_embedded_install_sql())
    except PermissionError as exc:
        pytest.skip(f"cannot add pgmq extension files to {extension}: {exc}")
    try:
        yield
    finally:
        if with_bundled:
            bundled.unlink(missing_ok=True)
