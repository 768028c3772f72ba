"""The files that install Nexus agree: pyproject's dependencies, the lock, the Dockerfile."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock pins exact versions only: {line!r}"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_lock_pins_every_dependency_and_extra() -> None:
    """Every package pyproject names (runtime, extras, dev, bench) has one exact version in the lock."""
    named = {_name(r) for r in PROJECT["dependencies"]}
    for requirements in PROJECT["optional-dependencies"].values():
        named |= {_name(r) for r in requirements}
    named.discard("nexus-ingest")  # the project's own extras refer to it
    missing = named - set(_locked())
    assert not missing, f"run `make lock`: {sorted(missing)} not in requirements.lock"


def test_the_dockerfile_installs_extras_that_exist_from_files_it_may_copy() -> None:
    """The Dockerfile's extras are pyproject extras; what it copies exists and the build context lets in."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    [extras] = re.findall(r"^ARG EXTRAS=(.*)$", dockerfile, flags=re.MULTILINE)
    assert set(extras.split(",")) <= set(PROJECT["optional-dependencies"]) - {"dev", "bench"}
    assert 'pip install -c requirements.lock ".[${EXTRAS}]"' in dockerfile
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    copied = {
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    assert copied <= allowed and all((ROOT / source).exists() for source in copied)
