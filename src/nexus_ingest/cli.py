"""The `nexus` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from nexus_ingest import __version__
from nexus_ingest.errors import NexusError
from nexus_ingest.settings import Settings

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one sub-command; errors are one line on stderr and exit code 1 or 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        from nexus_ingest.logs import configure_logging

        configure_logging(settings.log_level)
        result: int = args.handler(args, settings)
        return result
    except ValidationError as exc:
        return _fail(f"invalid configuration: {_first_error(exc)}", 2)
    except NexusError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}", 1)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last resort: one line, never a traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc}", 1)


def _fail(message: str, code: int) -> int:
    one_line = " ".join(message.split())
    print(f"nexus: error: {one_line}", file=sys.stderr)
    return code


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_input=False)[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nexus", description="Asynchronous lead ingestion on Postgres and PGMQ."
    )
    parser.add_argument("--version", action="version", version=f"nexus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(
        sub,
        "up",
        "migrate, then run the API and the worker (embedded Postgres without DATABASE_URL)",
        cmd_up,
    )
    _command(sub, "migrate", "apply pending database migrations", cmd_migrate)
    _command(sub, "serve", "run the HTTP API only", cmd_serve)
    _command(sub, "worker", "run the queue worker only", cmd_worker)
    send = _command(
        sub,
        "send",
        "post a conversation (JSON object, or JSON Lines of them) to the producer",
        cmd_send,
    )
    send.add_argument("file", help="path, or - for standard input")
    send.add_argument(
        "--url", help="producer URL (default: http://127.0.0.1:$NEXUS_PORT/api/nexus/producer)"
    )
    send.add_argument("--session", help="sessionId to use when the file has none")
    send.add_argument("--fingerprint", help="fingerprint to use when the file has none")
    _command(sub, "metrics", "print the queue's metrics", cmd_metrics)
    extract = _command(
        sub, "extract", "print the prospect extracted from a conversation", cmd_extract
    )
    extract.add_argument("file", help="path, or - for standard input")
    evaluate = _command(
        sub, "eval", "score the extractor on a labeled JSON Lines dataset", cmd_eval
    )
    evaluate.add_argument("dataset", type=Path)
    return parser


def _command(
    sub: Any, name: str, help_text: str, handler: Callable[[argparse.Namespace, Settings], int]
) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    command.set_defaults(handler=handler)
    return command


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional on some platforms
        return asyncio.run(coro)
    return uvloop.run(coro)


def _database(settings: Settings) -> str:
    from nexus_ingest import database

    return database.resolve(settings.database_url, settings.data_dir).url


def _migrated_database(settings: Settings) -> str:
    from nexus_ingest.migrate import migrate

    url = _database(settings)
    migrate(url)
    return url


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.migrate import migrate

    applied = migrate(_database(settings))
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "none"
    print(f"migrations applied: {names}")
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.runtime import run

    url = _migrated_database(settings)
    base = f"http://{settings.host}:{settings.port}"
    print(f"Nexus {__version__} is up (extractor: {settings.resolved_extractor()})")
    print(f"  producer:  {base}/api/nexus/producer")
    print(f"  metrics:   {base}/metrics")
    print(f"  API docs:  {base}/docs")
    print("Press Ctrl-C to stop.", flush=True)
    _run(run(settings, url, api=True, worker=True))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.runtime import run

    _run(run(settings, _migrated_database(settings), api=True, worker=False))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.runtime import run

    _run(run(settings, _migrated_database(settings), api=False, worker=True))
    return 0


def _read_input(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NexusError(f"cannot read {name}: {exc}") from exc


def _json_documents(text: str, name: str) -> list[Any]:
    """One JSON document, or JSON Lines of them."""
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                documents.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise NexusError(f"{name}:{number}: not valid JSON ({exc.msg})") from exc
    if not documents:
        raise NexusError(f"{name}: no JSON found")
    return documents


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    url = args.url or f"http://127.0.0.1:{settings.port}/api/nexus/producer"
    for body in _json_documents(_read_input(args.file), args.file):
        if not isinstance(body, dict):
            raise NexusError(
                "each conversation must be a JSON object with messages, fingerprint, sessionId"
            )
        body.setdefault("sessionId", args.session)
        body.setdefault("fingerprint", args.fingerprint)
        status, answer = _post_json(url, {k: v for k, v in body.items() if v is not None})
        print(json.dumps(answer, ensure_ascii=False))
        if status >= 400:
            raise NexusError(f"the producer refused the conversation (HTTP {status})")
    return 0


def _post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - the URL is the user's own producer
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except urllib.error.URLError as exc:
        raise NexusError(f"cannot reach the producer at {url}: {exc.reason}") from exc


def cmd_metrics(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from nexus_ingest import queue
    from nexus_ingest.store import open_pool

    async def read() -> queue.QueueMetrics:
        pool = await open_pool(_database(settings), min_size=1, max_size=1)
        try:
            return await queue.metrics(pool, timeout=5)
        finally:
            await pool.close()

    m = _run(read())
    table = Table(title="nexus-prospect-ingestion")
    for column in ("queue_length", "oldest_msg_age_sec", "newest_msg_age_sec", "total_messages"):
        table.add_column(column, justify="right")
    table.add_row(
        *(
            str(v if v is not None else "-")
            for v in (m.queue_length, m.oldest_msg_age_sec, m.newest_msg_age_sec, m.total_messages)
        )
    )
    Console().print(table)
    return 0


def _conversation(document: Any) -> list[Any]:
    if isinstance(document, dict) and isinstance(document.get("messages"), list):
        return list(document["messages"])
    if isinstance(document, list):
        return document
    raise NexusError("expected a JSON object with a 'messages' list, or a list of messages")


def cmd_extract(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.extract import build_extractor
    from nexus_ingest.models import ChatMessage

    documents = _json_documents(_read_input(args.file), args.file)
    try:
        messages = [ChatMessage.model_validate(m) for m in _conversation(documents[0])]
    except ValidationError as exc:
        raise NexusError(f"not a conversation: {_first_error(exc)}") from exc

    async def extract() -> Any:
        extractor = build_extractor(settings)
        try:
            return await extractor.extract(messages)
        finally:
            await extractor.aclose()

    extraction = _run(extract())
    print(json.dumps(extraction.prospect.model_dump(mode="json"), ensure_ascii=False, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.evaluate import evaluate, format_report, load_dataset
    from nexus_ingest.extract import build_extractor

    examples = load_dataset(args.dataset)

    async def score() -> Any:
        extractor = build_extractor(settings)
        try:
            return await evaluate(examples, extractor)
        finally:
            await extractor.aclose()

    print(format_report(_run(score())))
    return 0
