"""Running npm projects of this repository (clients/js, examples/nextjs) from the tests.

`npm ci` installs exactly the committed package-lock.json; a stamp in node_modules skips it
while the lock file is unchanged. Without node, npm or a reachable registry the tests skip,
saying why.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "js"
NEXT_EXAMPLE = ROOT / "examples" / "nextjs"
_STAMP = ".nexus-installed"
_INSTALL_TIMEOUT_S = 600


def _lock_hash(project: Path) -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((project / name).read_bytes())
    return digest.hexdigest()


def _installed(project: Path) -> bool:
    stamp = project / "node_modules" / _STAMP
    return stamp.exists() and stamp.read_text() == _lock_hash(project)


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
    result = npm(project, "ci", "--no-audit", "--no-fund", timeout=_INSTALL_TIMEOUT_S)
    assert result.returncode == 0, f"npm ci failed in {project}:\n{result.stderr[-4000:]}"
    (project / "node_modules" / _STAMP).write_text(_lock_hash(project))


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
