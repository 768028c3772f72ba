"""Privacy at the edges: `nexus forget` given what cannot be a visitor."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from tests.helpers import NEXUS, nexus_env


@pytest.mark.parametrize("fingerprint", ["", "   "])
def test_forget_refuses_a_blank_fingerprint(db_url: str, fingerprint: str) -> None:
    """A blank fingerprint (an unset shell variable) names no visitor the producer ever took:
    `nexus forget` says so in one line and exits 2, instead of printing zero counts an operator
    reads as "erased", and leaves no tombstone."""
    result = subprocess.run(
        [NEXUS, "forget", fingerprint, "--yes"],
        env=nexus_env(db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith("nexus: error:") and "blank" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM nexus.forgotten").fetchone() == (0,)
