"""The Next.js example (examples/nextjs) builds with `next build`, using the client package."""

from __future__ import annotations

import json

import pytest

from tests.npm import NEXT_EXAMPLE, build_next_example, output


@pytest.mark.timeout(1500)
def test_the_nextjs_example_builds() -> None:
    """`next build` compiles and type-checks the example: the hook, the route handler, the rewrite."""
    result = build_next_example()
    assert result.returncode == 0, output(result)
    assert "Compiled successfully" in result.stdout, output(result)
    manifest = json.loads((NEXT_EXAMPLE / ".next" / "app-path-routes-manifest.json").read_text())
    assert "/api/nexus/producer" in manifest.values()
    installed = json.loads(
        (NEXT_EXAMPLE / "node_modules" / "@nexus-ingest" / "client" / "package.json").read_text()
    )
    assert installed["name"] == "@nexus-ingest/client"
    assert not (NEXT_EXAMPLE / "node_modules" / "@nexus-ingest" / "client").is_symlink()
