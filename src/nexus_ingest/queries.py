"""The named SQL queries of `sql/queries.sql`, loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import LiteralString, cast

_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, LiteralString]:
    """Split a file of `-- name: x` blocks into {name: sql}."""
    parts = _NAME_LINE.split(text)
    names, bodies = parts[1::2], parts[2::2]
    return {
        name: cast(LiteralString, body.strip()) for name, body in zip(names, bodies, strict=True)
    }


@cache
def all_queries() -> dict[str, LiteralString]:
    """Every named query shipped with the package: each `.sql` file of `sql/` (not migrations)."""
    found: dict[str, LiteralString] = {}
    for entry in sorted(files("nexus_ingest").joinpath("sql").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, sql in parse_queries(entry.read_text("utf-8")).items():
                if name in found:
                    raise ValueError(f"query {name!r} is defined twice")
                found[name] = sql
    return found


def query(name: str) -> LiteralString:
    """The SQL of one named query."""
    return all_queries()[name]
