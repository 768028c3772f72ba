"""The Next.js example (examples/nextjs) builds with `next build`, using the client package."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.npm import NEXT_EXAMPLE, build_next_example, output, serving_next_example

SNAPSHOT = {
    "messages": [{"role": "user", "content": "Hola"}],
    "fingerprint": "fp-next",
    "sessionId": "s-next",
}


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


@pytest.mark.timeout(1500)
def test_with_nexus_unreachable_the_route_handler_answers_in_nexus_error_shape(
    tmp_path: Path,
) -> None:
    """With Nexus down, the route handler answers 502 `nexus_unreachable`, a message and Retry-After."""
    build = build_next_example()
    assert build.returncode == 0, output(build)
    nowhere = f"http://127.0.0.1:{free_port()}"
    with serving_next_example(free_port(), nowhere, tmp_path / "next.log") as base:
        answer = httpx.post(
            f"{base}/api/nexus/producer",
            json=SNAPSHOT,
            headers={"Idempotency-Key": "next-1"},
            timeout=30,
        )
    assert answer.status_code == 502
    assert answer.headers["retry-after"] == "2"
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {
        "status": "error",
        "error": "nexus_unreachable",
        "message": "Nexus is unreachable.",
    }
