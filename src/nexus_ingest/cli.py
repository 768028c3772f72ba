"""The `nexus` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

import nexus_ingest
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
    parser.add_argument("--version", action=_PrintVersion, help="show the version and exit")
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
    metrics = _command(sub, "metrics", "print the queue's metrics", cmd_metrics)
    metrics.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    metrics.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    extract = _command(
        sub, "extract", "print the prospect extracted from a conversation", cmd_extract
    )
    extract.add_argument("file", help="path, or - for standard input")
    dlq = _command(sub, "dlq", "inspect, replay or purge the dead-letter queue", cmd_dlq)
    dlq_sub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    dlq_list = dlq_sub.add_parser("list", help="list dead letters with their errors")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = dlq_sub.add_parser("replay", help="send dead letters back to the work queue")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", type=int, action="append", dest="ids", help="a dead letter's id (repeatable)"
    )
    which.add_argument("--all", action="store_true", help="every dead letter")
    dlq_sub.add_parser("purge", help="delete every dead letter")
    forget = _command(sub, "forget", "erase everything held about one visitor", cmd_forget)
    forget.add_argument("fingerprint")
    trace = _command(
        sub, "trace", "show a session's or a message's path from receipt to save", cmd_trace
    )
    trace.add_argument("key", metavar="SESSION_ID|MSG_ID")
    trace.add_argument("--json", action="store_true", help="one JSON object per moment")
    evaluate = _command(
        sub, "eval", "score the extractor on a labeled JSON Lines dataset", cmd_eval
    )
    evaluate.add_argument("dataset", type=Path)
    return parser


class _PrintVersion(argparse.Action):
    """`--version`, reading the package metadata only when asked (it costs start-up time)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        parser.exit(message=f"nexus {nexus_ingest.__version__}\n")


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
    from nexus_ingest import embedded

    return embedded.resolve(settings.database_url, settings.data_dir).url


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
    print(f"Nexus {nexus_ingest.__version__} is up (extractor: {settings.resolved_extractor()})")
    print(f"  producer:  {base}/api/nexus/producer")
    print(f"  metrics:   {base}/metrics")
    print(f"  API docs:  {base}/docs")
    print(f"  demo chat: {base}/demo")
    print(f"  dashboard: {base}/dashboard (sign in with NEXUS_ADMIN_TOKEN)")
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
    import urllib.error
    import urllib.request

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
    from rich.live import Live

    from nexus_ingest import queue

    async def view(pool: Any) -> Any:
        return _metrics_view(await queue.metrics(pool, timeout=5), await _spend_rows(pool))

    async def watch(pool: Any) -> None:
        with Live(await view(pool), console=Console(), auto_refresh=False) as live:
            while args.watch:
                await asyncio.sleep(args.interval)
                live.update(await view(pool), refresh=True)

    with contextlib.suppress(KeyboardInterrupt):
        _with_pool(settings, watch)
    return 0


def _metrics_table(m: Any) -> Any:
    from rich.table import Table

    table = Table(title="nexus-prospect-ingestion")
    columns = ("queue_length", "oldest_msg_age_sec", "newest_msg_age_sec", "total_messages")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*(str(getattr(m, c)) if getattr(m, c) is not None else "-" for c in columns))
    return table


_SPEND_DAYS = 7


async def _spend_rows(pool: Any) -> Any:
    from nexus_ingest import store

    return await store.spend(pool, days=_SPEND_DAYS)


def _metrics_view(m: Any, spend: Any) -> Any:
    """The queue's figures, then what LLM extraction cost per day and model."""
    from rich.console import Group

    return Group(_metrics_table(m), _spend_table(spend))


def _spend_table(rows: Any) -> Any:
    """Tokens by kind (writes and reads: the prompt cache's) and cost, per day and model."""
    from rich import box
    from rich.table import Table

    from nexus_ingest.spend import total_spend, usd

    table = Table(
        title=f"LLM spend, last {_SPEND_DAYS} days (UTC)",
        caption="tokens: plain input, cache writes, cache reads, output"
        if rows
        else "no LLM extractions",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("day", no_wrap=True)
    table.add_column("model", overflow="fold")
    for column in ("calls", "input", "writes", "reads", "output", "cost"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in [*rows, total_spend(rows, "total")] if rows else []:
        cost = usd(r.cost_usd) + (f" +{r.unpriced} unpriced" if r.unpriced else "")
        counts = (r.extractions, r.input, r.cache_write, r.cache_read, r.output)
        table.add_row(str(r.day or ""), r.model, *(f"{n:,}" for n in counts), cost)
    return table


def _with_pool(settings: Settings, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Run `work(pool)` against the configured database."""
    from nexus_ingest.db import open_pool

    async def run() -> T:
        pool = await open_pool(_database(settings), min_size=1, max_size=2)
        try:
            await pool.wait(timeout=10)
            return await work(pool)
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                raise NexusError("cannot connect to the database") from exc
            raise
        finally:
            await pool.close()

    return _run(run())


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest import queue

    if args.action == "list":
        letters = _with_pool(settings, lambda pool: queue.dead_letters(pool, limit=args.limit))
        _print_dead_letters(letters, as_json=args.json)
    elif args.action == "replay":
        replayed = _with_pool(
            settings,
            lambda pool: queue.replay_dead_letters(
                pool, msg_ids=args.ids or (), replay_all=args.all
            ),
        )
        for dead_id, new_id in replayed:
            print(f"replayed dead letter {dead_id} as message {new_id}")
        print(f"{len(replayed)} replayed")
        if args.ids and len(replayed) < len(args.ids):
            raise NexusError(
                f"{len(args.ids) - len(replayed)} of the given ids are not in the dead-letter queue"
            )
    else:
        purged = _with_pool(settings, queue.purge_dead_letters)
        print(f"{purged} purged")
    return 0


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.timeline import render, timeline

    session_id, moments = _with_pool(settings, lambda pool: timeline(pool, args.key))
    if args.json:
        for moment in moments:
            print(
                json.dumps(
                    {"sessionId": session_id, **moment.as_json()}, ensure_ascii=False, default=str
                )
            )
    else:
        print(render(session_id, moments))
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.store import forget_prospect

    counts = _with_pool(settings, lambda pool: forget_prospect(pool, args.fingerprint))
    print(", ".join(f"{name}: {count}" for name, count in counts.items()))
    return 0


def _print_dead_letters(letters: Sequence[Any], *, as_json: bool) -> None:
    if as_json:
        for letter in letters:
            print(
                json.dumps(
                    {
                        "id": letter.msg_id,
                        "originalMsgId": letter.original_msg_id,
                        "sessionId": letter.session_id,
                        "enqueuedAt": letter.enqueued_at.isoformat(),
                        "error": letter.error,
                    },
                    ensure_ascii=False,
                )
            )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dead letters ({len(letters)})")
    for column in ("id", "original", "session", "attempts", "kind", "reason"):
        table.add_column(column)
    for letter in letters:
        error = letter.error
        table.add_row(
            str(letter.msg_id),
            str(letter.original_msg_id),
            str(letter.session_id),
            str(error.get("attempts", "")),
            str(error.get("kind", "")),
            str(error.get("reason", ""))[:80],
        )
    Console().print(table)


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
