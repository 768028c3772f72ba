"""Write docs/SETTINGS.md (every setting) and .env.example (the ones a deployment sets most).

`python scripts/settings_table.py` regenerates both; `--check` fails when either is out of date.
Both come from `nexus_ingest.settings.Settings`, so neither can drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from nexus_ingest.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "SETTINGS.md"
ENV_EXAMPLE = ROOT / ".env.example"

# What a deployment sets most, in the order a reader meets them.
MOST_SET = (
    "database_url",
    "host",
    "port",
    "extractor",
    "anthropic_api_key",
    "anthropic_model",
    "openai_base_url",
    "openai_api_key",
    "openai_model",
    "consumer_token",
    "admin_token",
    "cors_origins",
    "coalesce_window_s",
    "worker_concurrency",
    "worker_metrics_port",
    "max_attempts",
    "log_level",
)


def _plain(default: Any) -> str:
    """A default as it is written in an environment variable."""
    if default is None:
        return ""
    if hasattr(default, "get_secret_value"):
        return str(default.get_secret_value())
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list | dict):
        return json.dumps(default)
    return str(default)


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable a user sets: the short alias when there is one (`DATABASE_URL`)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"NEXUS_{name.upper()}"


def render() -> str:
    lines = [
        "# Settings",
        "",
        "Every setting is an environment variable (or a line of a `.env` file). Generated from",
        "`nexus_ingest.settings.Settings` by `scripts/settings_table.py`.",
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None else f"`{_plain(default)}`"
        lines.append(f"| `NEXUS_{name.upper()}` | {shown} | {_one_line(field.description)} |")
    return "\n".join(lines) + "\n"


def _one_line(description: str | None) -> str:
    """A docstring wrapped over lines, as one line: a table cell or a comment line holds one."""
    return " ".join((description or "").split())


def render_env_example() -> str:
    lines = [
        "# The settings a deployment sets most. Copy this file to .env (never commit .env) and",
        "# uncomment what you change; each value shown is the default. Every setting is in",
        "# docs/SETTINGS.md. Generated from nexus_ingest.settings.Settings by",
        "# scripts/settings_table.py.",
    ]
    for name in MOST_SET:
        field = Settings.model_fields[name]
        default = field.get_default(call_default_factory=True)
        described = _one_line(field.description)
        lines += ["", f"# {described}", f"# {variable(name, field)}={_plain(default)}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    outputs = {TARGET: render(), ENV_EXAMPLE: render_env_example()}
    if "--check" in sys.argv:
        stale = [path.name for path, text in outputs.items() if path.read_text() != text]
        if stale:
            print(f"out of date: {', '.join(stale)}: run scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
