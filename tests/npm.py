"""Running npm projects of this repository (clients/js, examples/nextjs) from the tests.

`npm ci` installs exactly the committed package-lock.json; a stamp in node_modules skips it
while the lock file is unchanged. Without node, npm or a reachable registry the tests skip,
saying why.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "js"
NEXT_EXAMPLE = ROOT / "examples" / "nextjs"
_STAMP = ".nexus-installed"
_INSTALL_TIMEOUT_S = 600


def _inputs_hash(project: Path) -> str:
    """The lock file, and for the example the client package that `npm ci` copies in."""
    files = [project / "package.json", project / "package-lock.json"]
    if project == NEXT_EXAMPLE:
        files += sorted(p for p in CLIENT.glob("*/*") if p.parent.name in ("src", "types"))
        files.append(CLIENT / "package.json")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _installed(project: Path) -> bool:
    stamp = project / "node_modules" / _STAMP
    return stamp.exists() and stamp.read_text() == _inputs_hash(project)


def _unreachable_reason() -> str | None:
    """Why npm cannot install here, or None when it can."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        ping = subprocess.run(
            ["npm", "ping"], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return "the npm registry did not answer `npm ping` within 60 s"
    if ping.returncode != 0:
        return f"the npm registry cannot be reached: {ping.stderr.strip()[-300:]}"
    return None


def npm_ci(project: Path) -> None:
    """`npm ci` in `project` unless its lock file is already installed; skip where npm cannot run."""
    if shutil.which("node") and shutil.which("npm") and _installed(project):
        return
    reason = _unreachable_reason()
    if reason is not None:
        pytest.skip(f"npm install of {project.relative_to(ROOT)} skipped: {reason}")
    result = npm(
        project, "ci", "--prefer-offline", "--no-audit", "--no-fund", timeout=_INSTALL_TIMEOUT_S
    )
    assert result.returncode == 0, f"npm ci failed in {project}:\n{result.stderr[-4000:]}"
    (project / "node_modules" / _STAMP).write_text(_inputs_hash(project))


def npm(
    project: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `npm ARGS` in `project`, capturing its output."""
    return subprocess.run(
        ["npm", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    """The tail of a run's output, for assertion messages."""
    return (result.stdout[-6000:] + "\n" + result.stderr[-3000:]).strip()


@functools.cache
def build_next_example() -> subprocess.CompletedProcess[str]:
    """`next build` of examples/nextjs, once per test session (the browser test serves it)."""
    npm_ci(NEXT_EXAMPLE)
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    env.pop("NEXUS_FORWARD", None)
    return npm(NEXT_EXAMPLE, "run", "build", timeout=_INSTALL_TIMEOUT_S, env=env)


@contextmanager
def serving_next_example(port: int, nexus_url: str, log: Path) -> Iterator[str]:
    """`next start` of the built example on loopback, forwarding to Nexus at `nexus_url`."""
    env = {**os.environ, "NEXUS_URL": nexus_url, "NEXT_TELEMETRY_DISABLED": "1"}
    command = [str(NEXT_EXAMPLE / "node_modules" / ".bin" / "next"), "start"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port), "--hostname", "127.0.0.1"],
            cwd=NEXT_EXAMPLE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one below
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base, proc), timeout=60, interval=0.2, what="next start")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _answers(base: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"next start exited early with code {proc.returncode}")
    try:
        return httpx.get(base, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
