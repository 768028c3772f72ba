"""nexus.merge_list, rewritten as a loop (migration 018), gives the lists 005's query gave, with
two spellings keyed alike when they differ by accents too (023)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MIGRATIONS = Path(__file__).resolve().parents[2] / "src" / "nexus_ingest" / "sql" / "migrations"


def _reference() -> str:
    """005's set-based version, read from its migration, as pg_temp.merge_list_005, grouping by
    023's key: the reference the loop is held to."""
    text = (MIGRATIONS / "005_prospects.sql").read_text(encoding="utf-8")
    start = text.index("CREATE OR REPLACE FUNCTION nexus.merge_list(")
    end = text.index("$$;", start) + len("$$;")
    reference = text[start:end].replace("nexus.merge_list(", "pg_temp.merge_list_005(", 1)
    return reference.replace("GROUP BY lower(btrim(item))", "GROUP BY nexus.list_key(item)", 1)


# Spellings that differ by case, by spaces at either end, or not at all; blanks and nulls;
# letters whose lower case is not a plain ASCII fold.
item = st.one_of(
    st.none(),
    st.sampled_from(
        ["crm", "CRM", " crm ", "Crm\t", "", "  ", "SEO", "seo", "İstanbul", "ΣΟΦΙΑ", "Diseño"]
    ),
    st.text(alphabet="aAbB ñÑnNáÁ\t", max_size=4),
)
items = st.one_of(st.none(), st.lists(item, max_size=6))


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(_reference())
        yield c


def _merged_both_ways(
    conn: psycopg.Connection[Any], old: list[str | None] | None, new: list[str | None] | None
) -> tuple[list[str], list[str]]:
    """(what merge_list gives, what 005's version gives) for the same lists."""
    row = conn.execute(
        "SELECT nexus.merge_list(%(old)s::text[], %(new)s::text[]),"
        " pg_temp.merge_list_005(%(old)s::text[], %(new)s::text[])",
        {"old": old, "new": new},
    ).fetchone()
    assert row is not None
    return row[0], row[1]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(old=items, new=items)
def test_the_loop_merges_as_the_query_did(
    conn: psycopg.Connection[Any], old: list[str | None] | None, new: list[str | None] | None
) -> None:
    ours, reference = _merged_both_ways(conn, old, new)
    assert ours == reference


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(old=st.lists(item, min_size=101, max_size=150), new=st.lists(item, max_size=40))
def test_long_lists_merge_as_the_query_did(
    conn: psycopg.Connection[Any], old: list[str | None], new: list[str | None]
) -> None:
    """Past 100 items the function takes the query itself; the answer is the same."""
    ours, reference = _merged_both_ways(conn, old, new)
    assert ours == reference


def test_first_spelling_first_order_no_blanks(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT nexus.merge_list(ARRAY['Paquetes', NULL, ' '], ARRAY['CRM', ' paquetes ', 'crm'])"
    ).fetchone()
    assert row == (["Paquetes", "CRM"],)


def test_spellings_that_differ_by_accents_are_one_item(conn: psycopg.Connection[Any]) -> None:
    """The first spelling is kept, as for case: a product the model wrote with and without its
    accents, in either case, is listed once."""
    row = conn.execute(
        "SELECT nexus.merge_list(ARRAY['Diseño web', 'CRM'],"
        " ARRAY['diseno web', 'DISEÑO WEB', 'crm', 'Educación', 'EDUCACION'])"
    ).fetchone()
    assert row == (["Diseño web", "CRM", "Educación"],)
