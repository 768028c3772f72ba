"""Write docs/SETTINGS.md: every setting, its environment variable, default and meaning.

`python scripts/settings_table.py` regenerates it; `--check` fails when it is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nexus_ingest.settings import Settings

TARGET = Path(__file__).resolve().parents[1] / "docs" / "SETTINGS.md"


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
        shown = (
            "unset"
            if default is None
            else f"`{default.get_secret_value() if hasattr(default, 'get_secret_value') else default}`"
        )
        lines.append(f"| `NEXUS_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if TARGET.read_text() != text:
            print("docs/SETTINGS.md is out of date: run scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
