"""The JavaScript client (clients/js): its node tests, its types, its build, its contract.

npm installs the committed lock file once (tests/npm.py); these tests then run offline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nexus_ingest.api import create_app
from nexus_ingest.settings import Settings
from tests.npm import CLIENT, npm, npm_ci, output

IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;]*?\bfrom\s+["']([^"']+)["']""", re.M | re.S)


@pytest.fixture(scope="module")
def client() -> Path:
    """clients/js with its development dependencies installed."""
    npm_ci(CLIENT)
    return CLIENT


def test_node_tests_pass(client: Path) -> None:
    """`npm test` passes: order, idempotency keys, Retry-After, the bounded queue, page hide, the hook."""
    result = npm(client, "test")
    assert result.returncode == 0, output(result)
    passed = re.search(r"^# pass (\d+)$", result.stdout, re.M)
    assert passed is not None and int(passed.group(1)) >= 30, output(result)
    assert re.search(r"^# fail 0$", result.stdout, re.M), output(result)


def test_sources_satisfy_their_declared_types(client: Path) -> None:
    """`tsc --noEmit` passes: the JSDoc-typed sources match types/*.d.ts exactly."""
    result = npm(client, "run", "typecheck")
    assert result.returncode == 0, output(result)


def test_served_widget_is_a_fresh_build_of_the_client(client: Path) -> None:
    """The committed /widget.js equals a fresh esbuild bundle of clients/js/src/embed.js."""
    result = npm(client, "run", "check:widget")
    assert result.returncode == 0, output(result)


def test_client_types_agree_with_the_openapi_document(client: Path, tmp_path: Path) -> None:
    """Types generated from /openapi.json by openapi-typescript and the client's types are mutually assignable."""
    document = tmp_path / "openapi.json"
    app = create_app(Settings(), "postgresql://unused@127.0.0.1/unused")
    document.write_text(json.dumps(app.openapi()))
    generated = client / "contract" / "openapi.d.ts"
    generated.unlink(missing_ok=True)
    result = npm(
        client,
        "exec",
        "--",
        "openapi-typescript",
        str(document),
        "--default-non-nullable",
        "false",
        "-o",
        str(generated),
    )
    assert result.returncode == 0, output(result)
    assert "Accepted: {" in generated.read_text()
    result = npm(client, "exec", "--", "tsc", "-p", "contract")
    assert result.returncode == 0, output(result)


def test_core_has_no_dependencies_and_react_is_optional() -> None:
    """The package has no runtime dependencies; only the React entry point imports react."""
    manifest = json.loads((CLIENT / "package.json").read_text())
    assert "dependencies" not in manifest
    assert manifest["peerDependenciesMeta"]["react"]["optional"] is True
    for source in sorted((CLIENT / "src").glob("*.js")):
        outside = {m for m in IMPORT.findall(source.read_text()) if not m.startswith("./")}
        assert outside == ({"react"} if source.name == "react.js" else set()), source.name
