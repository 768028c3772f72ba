"""The documentation names what the code has: log events, modules, commands and their options,
outcomes on /metrics, the migrations that last defined a function, and the measured figures it
quotes from docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import ast
import re
import typing
from pathlib import Path

import nexus_ingest
from nexus_ingest import cli
from nexus_ingest.worker.settle import _SAVED_AS, Outcome

PACKAGE = Path(nexus_ingest.__file__).parent
ROOT = PACKAGE.parents[1]
MIGRATIONS = PACKAGE / "sql" / "migrations"
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
SUPABASE = (ROOT / "docs" / "SUPABASE.md").read_text(encoding="utf-8")
LLM_SPEND = (ROOT / "docs" / "LLM_SPEND.md").read_text(encoding="utf-8")
BENCHMARKS = (ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8")

_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
_EVENT = re.compile(r"[a-z_]+\.[a-z_]+")


def section(text: str, heading: str) -> str:
    """The body of a `## heading` section, up to the next `## `."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every body row of the markdown tables in `text` (headers and rules skipped)."""
    rows: list[list[str]] = []
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        if n + 1 < len(lines) and set(lines[n + 1]) <= set("|-: ") and lines[n + 1].strip():
            continue  # a header row
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _is_log_call(node: ast.AST) -> typing.TypeGuard[ast.Call]:
    """`<logger>.<level>(...)`: `log.info(...)`, `structlog.get_logger("nexus").warning(...)`."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _LOG_METHODS
        and bool(node.args)
    )


def _string(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def logged_events() -> set[str]:
    """Every event name the package logs: `log.<level>("area.event", ...)`; the names passed to a
    helper that logs its parameter (`_logged("batch.poll_failed", ...)`); and the settler's
    `message.<outcome>` of each save."""
    events = {f"message.{outcome}" for outcome in _SAVED_AS.values()}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = [a.arg for a in function.args.args]
            for call in filter(_is_log_call, ast.walk(function)):
                first = call.args[0]
                if (name := _string(first)) is not None:
                    events.add(name)
                elif isinstance(first, ast.Name) and first.id in params:
                    events |= _arguments_given(tree, function.name, params.index(first.id))
    return {e for e in events if _EVENT.fullmatch(e)}


def _arguments_given(tree: ast.AST, function: str, position: int) -> set[str]:
    """The string constants every call of `function` in `tree` passes at `position`."""
    given: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == function
            and len(node.args) > position
            and (value := _string(node.args[position])) is not None
        ):
            given.add(value)
    return given


def test_every_logged_event_is_in_the_architecture_table() -> None:
    """docs/ARCHITECTURE.md promises "every log event": each one the code logs is in its table."""
    documented = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", section(ARCHITECTURE, "Log events")))
    missing = logged_events() - documented
    assert not missing, f"log events missing from docs/ARCHITECTURE.md: {sorted(missing)}"


def test_every_module_is_in_the_architecture_table() -> None:
    """Each module of the package, and of `worker/` and `extract/`, is in the modules table."""
    rows = {
        row[0].strip("`").rstrip("/"): row[1]
        for row in table_rows(section(ARCHITECTURE, "The modules"))
    }
    top = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem not in {"__init__", "__main__"})
        or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert top - rows.keys() == set(), f"modules missing: {sorted(top - rows.keys())}"
    for package in ("worker", "extract"):
        named = set(re.findall(r"`(\w+)`", rows[package]))
        inner = {p.stem for p in (PACKAGE / package).glob("*.py") if p.stem != "__init__"}
        assert inner <= named, f"{package}/ modules missing: {sorted(inner - named)}"


def _subcommands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """Every leaf command (`dlq list`, `supabase bundle`, `up`) with its parser."""
    leaves: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                leaves.update(_subcommands(child, f"{prefix}{name} "))
    if not leaves and prefix:
        leaves[prefix.strip()] = parser
    return leaves


def test_every_command_and_option_is_in_the_readme() -> None:
    """README's Commands section names every command and every documented option of each."""
    commands = section(README, "Commands")
    for name, parser in _subcommands(cli._parser()).items():
        assert f"nexus {name}" in commands, f"`nexus {name}` is missing from README's commands"
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue  # a positional argument, or an option for Nexus's own use
            if "-h" in action.option_strings:
                continue
            assert any(
                re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", commands)
                for option in action.option_strings
            ), f"`nexus {name}` option {action.option_strings} is missing from README's commands"


def test_readme_names_every_processed_outcome() -> None:
    """README's list of `nexus_messages_processed` outcomes has them all."""
    listed = re.search(r"processed \(([^)]*)\)", README)
    assert listed
    named = {word.strip().replace("-", "_") for word in listed[1].replace("\n", " ").split(",")}
    assert set(typing.get_args(Outcome)) <= named, set(typing.get_args(Outcome)) - named


def _defining_migrations(function: str) -> list[str]:
    pattern = re.compile(rf"CREATE (OR REPLACE )?FUNCTION nexus\.{function}\(")
    return sorted(p.name[:3] for p in MIGRATIONS.glob("*.sql") if pattern.search(p.read_text()))


def test_docs_name_the_last_migration_of_each_function() -> None:
    """Where a doc names the migrations of a function, the newest one that defines it is there."""
    cited = re.compile(
        r"`nexus\.(\w+)`[^`(]{0,20}\((?:migrations? )?(\d{3}(?:(?:, | and )\d{3})*)\)"
    )
    checked = 0
    for doc in (ARCHITECTURE, SUPABASE, README):
        for function, numbers in cited.findall(doc):
            defined = _defining_migrations(function)
            assert defined, function
            assert defined[-1] in numbers, f"nexus.{function}: ({numbers}) lacks {defined[-1]}"
            checked += 1
    assert checked >= 4
    fitted = sorted(
        p.name[:3]
        for p in MIGRATIONS.glob("*.sql")
        if "SELECT nexus.fit_to_pgmq();" in p.read_text()
    )
    claim = re.search(r"Migrations ([\d, and]+) decide this when they run", SUPABASE)
    assert claim and sorted(re.findall(r"\d{3}", claim[1])) == fitted


def _bench_row(mode: str, case: str) -> dict[str, str]:
    spend = section(BENCHMARKS, "Spend")
    header = next(line for line in spend.splitlines() if line.startswith("| mode |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for row in table_rows(spend):
        if row[:2] == [mode, case]:
            return dict(zip(columns, row, strict=True))
    raise AssertionError(f"no {mode} / {case} row in BENCHMARKS.md's spend table")


def test_llm_spend_quotes_the_run_benchmarks_shows() -> None:
    """LLM_SPEND.md says its figures are those of the run in BENCHMARKS.md: the pipeline rows
    agree with it, rounded as LLM_SPEND writes them."""
    for label, case in (
        ("pipeline: paced chats, the worker as built", "paced, policy"),
        ("pipeline: bursts (200 sessions x 5 snapshots)", "bursts, policy"),
    ):
        bench = _bench_row("pipeline", case)
        row = next(r for r in table_rows(LLM_SPEND) if r[0] == label)
        assert float(row[2].strip("*x")) == float(bench["vs_seed"]), (label, row[2])
        assert row[3] == f"{float(bench['first_row_max_s']):.1f} s", (label, row[3])
        assert row[4] == f"{float(bench['final_row_max_s']):.1f} s", (label, row[4])


def test_readme_drain_rates_are_those_of_benchmarks() -> None:
    """README's "one worker drains about N messages a second" is within 10% of BENCHMARKS.md."""
    claim = re.search(
        r"drains about\s+([\d,]+) messages a second with the no-op extractor and ([\d,]+) with the"
        r"\s+rules extractor",
        README,
    )
    assert claim
    for quoted, case in ((claim[1], "noop extractor"), (claim[2], "rules extractor")):
        measured = re.search(rf"\| drain \| nexus worker, {case} \| (\d+) msgs/s", BENCHMARKS)
        assert measured, case
        ratio = int(quoted.replace(",", "")) / int(measured[1])
        assert 0.9 <= ratio <= 1.1, f"README says {quoted} for the {case}; BENCHMARKS {measured[1]}"
