"""docs/SETTINGS.md and .env.example list the settings as the code defines them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from nexus_ingest.settings import Settings


def settings_table() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "settings_table.py"
    spec = importlib.util.spec_from_file_location("settings_table", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_doc_is_up_to_date() -> None:
    """The committed table equals a fresh rendering, and every field has a meaning."""
    module = settings_table()
    assert module.TARGET.read_text() == module.render()
    assert all(field.description for field in Settings.model_fields.values())


def test_env_example_is_up_to_date() -> None:
    """The committed .env.example equals a fresh rendering from the settings."""
    module = settings_table()
    assert module.ENV_EXAMPLE.read_text() == module.render_env_example()


def test_env_example_uncommented_loads_as_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable in .env.example is a real setting, and its value shown is the code's default."""
    module = settings_table()
    assignments = [
        line.removeprefix("# ")
        for line in module.ENV_EXAMPLE.read_text().splitlines()
        if line.startswith("# ") and "=" in line and line[2:].split("=")[0].isupper()
    ]
    names = {line.split("=", 1)[0] for line in assignments}
    assert len(names) == len(module.MOST_SET) >= 10
    known = {module.variable(n, f) for n, f in Settings.model_fields.items()}
    assert names <= known
    env = tmp_path / ".env"
    env.write_text("\n".join(a for a in assignments if not a.endswith("=")) + "\n")
    for name in known | {f"NEXUS_{n.upper()}" for n in Settings.model_fields}:
        monkeypatch.delenv(name, raising=False)
    assert Settings(_env_file=env) == Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_readme_settings_table_is_one_table_of_real_settings() -> None:
    """README's settings table has no blank line splitting it, and names only real settings."""
    module = settings_table()
    readme = (module.ROOT / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    rows = [n for n, line in enumerate(lines) if line.startswith("|")]
    assert rows == list(range(rows[0], rows[-1] + 1)), "one table: no gap between its rows"
    named = {
        name
        for line in lines[rows[0] + 2 :]
        if line.startswith("|")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])
    }
    known = {module.variable(n, f) for n, f in Settings.model_fields.items()}
    known |= {f"NEXUS_{n.upper()}" for n in Settings.model_fields}
    assert named and named <= known, named - known
