"""The embedded PostgreSQL's lifetime: it stops once the last process using it exits, even when
another one was killed before it could say it was leaving."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.test_outage import pg_ctl
from tests.helpers import NEXUS

USER = """
import sys, time
from pathlib import Path
from nexus_ingest.embedded import start_embedded
start_embedded(Path(sys.argv[1]))
print("up", flush=True)
if sys.argv[2] == "stay":
    time.sleep(120)
"""


def test_a_killed_user_does_not_keep_the_embedded_server_running() -> None:
    """A process killed while using the server (SIGKILL runs no exit hook) is not waited for:
    the next one to leave, being the last alive, stops the server."""
    with tempfile.TemporaryDirectory(prefix="nexus-embedded-") as folder:
        os.chmod(folder, 0o755)  # the server runs as its own user when we are root
        pgdata = Path(folder) / "pgdata"
        killed = subprocess.Popen(
            [sys.executable, "-c", USER, str(pgdata), "stay"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert killed.stdout is not None and killed.stdout.readline() == "up\n"
        finally:
            killed.kill()
            killed.wait(timeout=30)
        try:
            last = subprocess.run(
                [sys.executable, "-c", USER, str(pgdata), "leave"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert last.stdout == "up\n", last.stderr[-2000:]
            # The last user stops the server on its way out (`pg_ctl -w stop`): by the time it
            # has exited the postmaster's pid file is gone.
            deadline = time.monotonic() + 10
            while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not (pgdata / "postmaster.pid").exists(), "the server was left running"
        finally:
            if (pgdata / "postmaster.pid").exists():
                pg_ctl(pgdata, "-w", "-m", "immediate", "stop")


def _nexus_on_embedded(data_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`nexus ARGS` with no DATABASE_URL: on the embedded server kept under `data_home`."""
    env = {
        k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("NEXUS_")
    }
    env["XDG_DATA_HOME"] = str(data_home)
    return subprocess.run([NEXUS, *args], env=env, capture_output=True, text=True, timeout=120)


def _made_and_stopped(data_home: Path) -> Path:
    """An embedded data folder, made by a first `nexus migrate` (which stops the server)."""
    first = _nexus_on_embedded(data_home, "migrate")
    assert first.returncode == 0, first.stderr[-2000:]
    pgdata = data_home / "nexus" / "pgdata"
    assert not (pgdata / "postmaster.pid").exists()
    return pgdata


def test_data_of_another_postgres_major_is_one_line_saying_what_to_do() -> None:
    """A data folder made by another major version (the wheel upgraded since) is named with
    both versions and the way out, in one line, before anything is started."""
    with tempfile.TemporaryDirectory(prefix="nexus-embedded-") as folder:
        os.chmod(folder, 0o755)
        pgdata = _made_and_stopped(Path(folder))
        runs = (pgdata / "PG_VERSION").read_text().strip()
        (pgdata / "PG_VERSION").write_text("17\n" if runs != "17" else "16\n")
        result = _nexus_on_embedded(Path(folder), "migrate")
        assert result.returncode == 1
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr[-2000:]
        assert f"runs PostgreSQL {runs}" in lines[0] and "move the folder away" in lines[0]


def test_a_server_that_cannot_start_says_why_in_one_line() -> None:
    """When the server refuses to start, its own reason is the error, not pg_ctl's command line
    and the server's whole log."""
    with tempfile.TemporaryDirectory(prefix="nexus-embedded-") as folder:
        os.chmod(folder, 0o755)
        pgdata = _made_and_stopped(Path(folder))
        with (pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\nno_such_setting = on\n")
        result = _nexus_on_embedded(Path(folder), "migrate")
        assert result.returncode == 1
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr[-2000:]
        assert "contains errors" in lines[0] and "pg_ctl" not in lines[0], lines[0]
