"""Every error code the producer can answer is one its contract lists (and so the JS types)."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from nexus_ingest import api
from nexus_ingest.contract import ErrorCode


def _codes_answered_by(module_path: Path) -> set[str]:
    """The second argument of every `_reject(status, code, ...)` call in the module."""
    tree = ast.parse(module_path.read_text())
    codes = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "_reject"
            and len(node.args) >= 2
        ):
            code = node.args[1]
            assert isinstance(code, ast.Constant) and isinstance(code.value, str), ast.dump(code)
            codes.add(code.value)
    return codes


def test_every_refusal_code_is_in_the_contract() -> None:
    answered = _codes_answered_by(Path(api.__file__))
    assert {"rate_limited", "request_timeout"} <= answered  # the scan finds the calls
    assert answered <= set(typing.get_args(ErrorCode))
