"""docs/SETTINGS.md lists every setting as the code defines it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nexus_ingest.settings import Settings


def test_settings_doc_is_up_to_date() -> None:
    """The committed table equals a fresh rendering, and every field has a meaning."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "settings_table.py"
    spec = importlib.util.spec_from_file_location("settings_table", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TARGET.read_text() == module.render()
    assert all(field.description for field in Settings.model_fields.values())
