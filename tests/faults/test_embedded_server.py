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
