"""The JavaScript client (clients/js): its node tests, its types, its build, its contract.

npm installs the committed lock file once (tests/npm.py); these tests then run offline.
"""

from __future__ import annotations

import json
import re
import shutil
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


def _generate_contract_types(client: Path, tmp_path: Path) -> None:
    """Write contract/openapi.d.ts: openapi-typescript's reading of Nexus's /openapi.json."""
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


def test_client_types_agree_with_the_openapi_document(client: Path, tmp_path: Path) -> None:
    """Types generated from /openapi.json by openapi-typescript and the client's types are mutually assignable."""
    _generate_contract_types(client, tmp_path)
    result = npm(client, "exec", "--", "tsc", "-p", "contract")
    assert result.returncode == 0, output(result)


# Drifts of types/index.d.ts from the server's document that the contract check must refuse:
# an optional field dropped (still assignable both ways) and a field of the wrong type.
DRIFTS = {
    "ApiError lost its optional detail": ("  detail?: FieldProblem[] | null;\n", ""),
    "Snapshot lost its optional metadata": (
        "  metadata?: { [key: string]: unknown } | null;\n",
        "",
    ),
    "Accepted.sequence became a string": ("  sequence: number;", "  sequence: string;"),
}


@pytest.mark.parametrize("drift", DRIFTS, ids=list(DRIFTS))
def test_contract_check_fails_when_the_client_types_drift(
    client: Path, tmp_path: Path, drift: str
) -> None:
    """The contract check refuses client types that no longer match /openapi.json."""
    _generate_contract_types(client, tmp_path)
    copy = tmp_path / "client"
    shutil.copytree(client / "types", copy / "types")
    shutil.copytree(client / "contract", copy / "contract")
    shutil.copy(client / "tsconfig.json", copy / "tsconfig.json")
    before, after = DRIFTS[drift]
    types = copy / "types" / "index.d.ts"
    assert before in types.read_text()
    types.write_text(types.read_text().replace(before, after))
    result = npm(client, "exec", "--", "tsc", "-p", str(copy / "contract"))
    assert result.returncode != 0, f"the check passed despite: {drift}"
    assert "check.ts" in result.stdout, output(result)


def test_core_has_no_dependencies_and_react_is_optional() -> None:
    """The package has no runtime dependencies; only the React entry point imports react."""
    manifest = json.loads((CLIENT / "package.json").read_text())
    assert "dependencies" not in manifest
    assert manifest["peerDependenciesMeta"]["react"]["optional"] is True
    for source in sorted((CLIENT / "src").glob("*.js")):
        outside = {m for m in IMPORT.findall(source.read_text()) if not m.startswith("./")}
        assert outside == ({"react"} if source.name == "react.js" else set()), source.name
