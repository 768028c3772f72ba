"""The `nexus` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError

import nexus_ingest
from nexus_ingest.errors import NexusError
from nexus_ingest.settings import InvalidSettings, Settings, load_settings

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one sub-command; errors are one line on stderr and exit code 1 or 2."""
    _keep_standard_streams_open()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        from nexus_ingest.logs import configure_logging

        configure_logging(settings.log_level)
        result: int = args.handler(args, settings)
        return result
    except InvalidSettings as exc:
        return _fail(str(exc), 2)
    except ValidationError as exc:
        return _fail(f"invalid configuration: {_first_error(exc)}", 2)
    except NexusError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}", 1)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last resort: one line, never a traceback
        if getattr(exc, "sqlstate", None) in _SCHEMA_MISSING:
            return _fail(
                f"{_primary(exc)}: the database is missing migrations; run `nexus migrate`", 1
            )
        return _fail(f"unexpected {type(exc).__name__}: {exc}", 1)


# undefined_table, undefined_function, undefined_column, invalid_schema_name: what a command
# meets on a database that `nexus migrate` has not brought up to this package's version.
_SCHEMA_MISSING = frozenset({"42P01", "42883", "42703", "3F000"})


def _primary(exc: Exception) -> str:
    """The server's one-line message, without the query excerpt and hint psycopg appends."""
    diag = getattr(exc, "diag", None)
    return getattr(diag, "message_primary", None) or str(exc).splitlines()[0]


def _keep_standard_streams_open() -> None:
    """Give a closed stdin, stdout or stderr `/dev/null`, as daemons do.

    Started with one closed (`nexus trace >&-`), the next socket opened would take its number:
    output would go down the database connection, and the event loop aborts closing it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one


def _fail(message: str, code: int) -> int:
    one_line = " ".join(message.split())
    print(f"nexus: error: {one_line}", file=sys.stderr)
    return code


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_input=False)[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


class _Parser(argparse.ArgumentParser):
    """A wrong argument is one line, as every other error is (scripts read stderr's first line);
    the usage is a `--help` away. Subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("nexus").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"nexus: error: {where}{message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nexus", description="Asynchronous lead ingestion on Postgres and PGMQ.")
    parser.add_argument("--version", action=_PrintVersion, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(
        sub,
        "up",
        "migrate, then run the API and the worker (embedded Postgres without DATABASE_URL)",
        cmd_up,
    )
    migrate = _command(sub, "migrate", "apply pending database migrations", cmd_migrate)
    _json_flag(migrate, "print what was applied as one JSON object")
    _command(sub, "serve", "run the HTTP API only", cmd_serve)
    worker = _command(sub, "worker", "run the queue worker only", cmd_worker)
    # `nexus up` has migrated before it starts its worker process; that process must not stop
    # on a database that went away in between, but wait for it like the running worker does.
    worker.add_argument("--migrated", action="store_true", help=argparse.SUPPRESS)
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
    _concurrency_flag(send, "conversations posted at once (a session's stay in order)")
    send.add_argument(
        "--keep-going",
        action="store_true",
        help="send every good line and report each bad or refused one (default: stop at the first)",
    )
    send.add_argument(
        "--attempts",
        type=_positive,
        default=5,
        help="tries per conversation on 429, 503 or a lost connection",
    )
    _json_flag(send, "one JSON object per conversation: line, HTTP status, answer")
    metrics = _command(sub, "metrics", "print the queue's metrics", cmd_metrics)
    metrics.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    metrics.add_argument("--interval", type=_seconds, default=2.0, help="seconds between refreshes")
    _json_flag(metrics, "one JSON object (one per refresh with --watch)")
    extract = _command(
        sub, "extract", "print the prospect extracted from a conversation", cmd_extract
    )
    extract.add_argument("file", help="path, or - for standard input")
    dlq = _command(sub, "dlq", "inspect, replay or purge the dead-letter queue", cmd_dlq)
    dlq_sub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    dlq_list = dlq_sub.add_parser("list", help="list dead letters with their errors")
    dlq_list.add_argument("--limit", type=_positive, default=100)
    _json_flag(dlq_list, "one JSON object per line")
    replay = dlq_sub.add_parser("replay", help="send dead letters back to the work queue")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", type=_positive, action="append", dest="ids", help="a dead letter's id (repeatable)"
    )
    which.add_argument("--all", action="store_true", help="every dead letter")
    _concurrency_flag(replay, "batches replayed at once (a session's stay in one batch)")
    _json_flag(replay, "one JSON object: replayed pairs and missing ids")
    purge = dlq_sub.add_parser("purge", help="delete every dead letter")
    _yes_flag(purge)
    _json_flag(purge, "one JSON object with the count")
    forget = _command(sub, "forget", "erase everything held about one visitor", cmd_forget)
    forget.add_argument("fingerprint", type=_fingerprint)
    _yes_flag(forget)
    _json_flag(forget, "one JSON object with the counts")
    trace = _command(
        sub, "trace", "show a session's or a message's path from receipt to save", cmd_trace
    )
    trace.add_argument("key", metavar="SESSION_ID|MSG_ID")
    _json_flag(trace, "one JSON object per moment")
    evaluate = _command(
        sub, "eval", "score the extractor on a labeled JSON Lines dataset", cmd_eval
    )
    evaluate.add_argument("dataset", type=Path)
    _supabase_commands(sub)
    _concurrency_flag(evaluate, "extractions at once (worth it with an LLM)")
    _json_flag(evaluate, "the report as one JSON object")
    return parser


def _supabase_commands(sub: Any) -> None:
    kit = _command(sub, "supabase", "write the database kit for a Supabase project", cmd_supabase)
    kit_sub = kit.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = kit_sub.add_parser(
        "export",
        help="add Nexus's migrations to a Supabase project's supabase/migrations "
        "(for `supabase db push`), timestamped after its newest",
    )
    export.add_argument(
        "project", type=Path, nargs="?", default=Path(), help="the project's folder (default: .)"
    )
    bundle = kit_sub.add_parser(
        "bundle", help="print every migration as one script for the Supabase SQL editor"
    )
    bundle.add_argument("-o", "--output", type=Path, help="write to this file instead")


class _PrintVersion(argparse.Action):
    """`--version` on stdout, reading the package metadata only when asked (it costs start-up time)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"nexus {nexus_ingest.__version__}")
        parser.exit()


def _positive(text: str) -> int:
    """A count or an id: a whole number from 1 up to what a Postgres bigint holds."""
    from nexus_ingest.validation import BIGINT_MAX

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= BIGINT_MAX:
        raise argparse.ArgumentTypeError(f"must be from 1 to {BIGINT_MAX}")
    return value


def _seconds(text: str) -> float:
    """A duration: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a number of seconds above 0")
    return value


def _json_flag(command: argparse.ArgumentParser, help_text: str) -> None:
    command.add_argument("--json", action="store_true", help=help_text)


def _yes_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-y", "--yes", action="store_true", help="do it without asking (needed without a terminal)"
    )


def _concurrency_flag(command: argparse.ArgumentParser, help_text: str) -> None:
    command.add_argument("--concurrency", type=_positive, default=1, help=help_text)


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
    from nexus_ingest.migrate import latest_version, migrate

    applied = [f"{m.version:03d}_{m.name}" for m in migrate(_database(settings))]
    if args.json:
        _print_json({"applied": applied, "version": latest_version()})
    else:
        print(f"migrations applied: {', '.join(applied) or 'none'}")
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    with _shared_metrics():
        from nexus_ingest.runtime import ensure_port_free, run_up

        # A taken port is found before anything starts (the database, the worker process).
        ensure_port_free(settings.host, settings.port)
        url = _migrated_database(settings)
        _announce(settings)
        _run(run_up(settings, url))
    return 0


# prometheus_client's own variable (nexus_ingest.metrics reads it too; importing that module
# here would import prometheus_client before the variable is set).
_PROMETHEUS_FOLDER = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """A metrics folder that the API and its worker process both write to, so /metrics counts
    both. Set before anything imports prometheus_client, which reads it then; one the user set
    is used and kept."""
    if os.environ.get(_PROMETHEUS_FOLDER):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="nexus-metrics-") as folder:
        os.environ[_PROMETHEUS_FOLDER] = folder
        try:
            yield
        finally:
            del os.environ[_PROMETHEUS_FOLDER]


def _announce(settings: Settings) -> None:
    """Where everything is: a few lines for a person, one log event for a log collector."""
    base = f"http://{settings.host}:{settings.port}"
    places = {
        "producer": f"{base}/api/nexus/producer",
        "metrics": f"{base}/metrics",
        "API docs": f"{base}/docs",
        "demo chat": f"{base}/demo",
        "dashboard": f"{base}/dashboard (sign in with NEXUS_ADMIN_TOKEN)",
    }
    version, extractor = nexus_ingest.__version__, settings.resolved_extractor()
    if not sys.stdout.isatty():
        import structlog

        # A plain line would be the only one in the JSON stream that a collector cannot parse.
        structlog.get_logger("nexus").info(
            "service.started", version=version, extractor=extractor, url=base
        )
        return
    print(f"Nexus {version} is up (extractor: {extractor})")
    for name, where in places.items():
        print(f"  {name + ':':<11}{where}")
    print("Press Ctrl-C to stop.", flush=True)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.runtime import ensure_port_free, run

    ensure_port_free(settings.host, settings.port)
    _run(run(settings, _migrated_database(settings), api=True, worker=False))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.runtime import ensure_port_free, run

    if settings.worker_metrics_port is not None:
        ensure_port_free(settings.host, settings.worker_metrics_port)
    url = _database(settings) if args.migrated else _migrated_database(settings)
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    _run(run(settings, url, api=False, worker=True))
    return 0


def _read_input(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NexusError(f"cannot read {name}: {exc}") from exc


def _json_documents(text: str, name: str) -> list[Any]:
    """One JSON document, or JSON Lines of them; the first bad line is an error naming it."""
    from nexus_ingest.sender import json_documents

    documents, bad = json_documents(text)
    if bad:
        raise NexusError(f"{name}:{bad[0].line}: {bad[0].reason}")
    return [document for _, document in documents]


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.sender import parse_conversations, refusal

    conversations, bad = parse_conversations(
        _read_input(args.file), session=args.session, fingerprint=args.fingerprint
    )
    for line in bad:
        _fail(f"{args.file}:{line.line}: {line.reason}", 1)
    if bad and not args.keep_going:
        return 1  # nothing sent: a file is fixed and sent whole, or sent with --keep-going
    outcomes = _send(args, settings, conversations)
    if args.json:
        for o in outcomes:
            _print_json(
                {"line": o.line, "httpStatus": o.status, "attempts": o.attempts, "answer": o.answer}
            )
    else:
        print(_send_summary(outcomes, unsent=len(conversations) - len(outcomes)))
    refused = [o for o in outcomes if not o.accepted]
    for o in refused:
        _fail(f"{args.file}:{o.line}: {refusal(o)}", 1)
    return 1 if refused or bad else 0


def _send(args: argparse.Namespace, settings: Settings, conversations: Sequence[Any]) -> list[Any]:
    from nexus_ingest.sender import Sender

    url = args.url or f"http://127.0.0.1:{settings.port}/api/nexus/producer"
    with _progress("sending", len(conversations)) as advance:
        sender = Sender(
            url,
            concurrency=args.concurrency,
            attempts=args.attempts,
            keep_going=args.keep_going,
            on_done=lambda _: advance(1),
        )
        return _run(sender.send_all(conversations))


def _send_summary(outcomes: Sequence[Any], *, unsent: int) -> str:
    accepted = [o for o in outcomes if o.accepted]
    duplicates = sum(
        1 for o in accepted if isinstance(o.answer, dict) and o.answer.get("duplicate")
    )
    # Status 0: no answer at all (the producer unreachable after every attempt), not a refusal.
    unanswered = sum(1 for o in outcomes if not o.accepted and o.status == 0)
    parts = [
        f"{len(accepted) - duplicates} queued",
        f"{duplicates} already queued before",
        f"{len(outcomes) - len(accepted) - unanswered} refused",
    ]
    if unanswered:
        parts.append(f"{unanswered} unanswered")
    if unsent:
        parts.append(f"{unsent} not sent")
    return ", ".join(parts)


def cmd_metrics(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.live import Live

    from nexus_ingest import queue

    async def watch_json(pool: Any) -> None:
        while True:
            m, spend = await queue.metrics(pool, timeout=5), await _spend_rows(pool)
            _print_json({**_metrics_json(m), "spend": [_spend_json(r) for r in spend]})
            if not args.watch:
                return
            await asyncio.sleep(args.interval)

    async def view(pool: Any) -> Any:
        return _metrics_view(await queue.metrics(pool, timeout=5), await _spend_rows(pool))

    async def watch(pool: Any) -> None:
        console = Console()
        if not console.is_terminal:
            # Live redraws in place on a terminal; to a pipe or a log it would print nothing
            # until it stopped. There each refresh is printed in turn.
            while True:
                console.print(await view(pool))
                if not args.watch:
                    return
                await asyncio.sleep(args.interval)
        with Live(await view(pool), console=console, auto_refresh=False) as live:
            while args.watch:
                await asyncio.sleep(args.interval)
                live.update(await view(pool), refresh=True)

    with contextlib.suppress(KeyboardInterrupt):
        _with_pool(settings, watch_json if args.json else watch)
    return 0


_METRIC_COLUMNS = ("queue_length", "oldest_msg_age_sec", "newest_msg_age_sec", "total_messages")


def _metrics_json(m: Any) -> dict[str, Any]:
    return {"queue": nexus_ingest.QUEUE_NAME, **{c: getattr(m, c) for c in _METRIC_COLUMNS}}


def _metrics_table(m: Any) -> Any:
    from rich.table import Table

    table = Table(title=nexus_ingest.QUEUE_NAME)
    for column in _METRIC_COLUMNS:
        table.add_column(column, justify="right")
    table.add_row(
        *(str(getattr(m, c)) if getattr(m, c) is not None else "-" for c in _METRIC_COLUMNS)
    )
    return table


_SPEND_DAYS = 7


async def _spend_rows(pool: Any) -> Any:
    from nexus_ingest import store

    return await store.spend(pool, days=_SPEND_DAYS)


def _spend_json(row: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(row).items() if k != "session_id"}


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


def _with_pool(
    settings: Settings, work: Callable[[Any], Coroutine[Any, Any, T]], *, connections: int = 2
) -> T:
    """Run `work(pool)` against the configured database."""
    from nexus_ingest.db import open_pool

    async def run() -> T:
        url = _database(settings)
        await _ensure_reachable(url)
        pool = await open_pool(url, min_size=1, max_size=connections, application_name="nexus cli")
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


async def _ensure_reachable(url: str) -> None:
    """Fail at once, in one line, on a database that does not answer, as `nexus migrate` does.

    The pool alone would keep retrying in the background for its whole wait, logging a
    warning at each attempt, before the command could say anything.
    """
    import psycopg

    from nexus_ingest.db import named
    from nexus_ingest.errors import DatabaseUnavailable

    try:
        conn = await psycopg.AsyncConnection.connect(
            named(url, "nexus cli"), autocommit=True, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
    await conn.close()


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest import queue

    if args.action == "list":
        letters = _with_pool(settings, lambda pool: queue.dead_letters(pool, limit=args.limit))
        _print_dead_letters(letters, as_json=args.json)
    elif args.action == "replay":
        _replay(args, settings)
    else:
        count = _with_pool(settings, queue.dead_letter_count)
        _confirm(f"Delete all {count} dead letters for good?", yes=args.yes)
        purged = _with_pool(settings, queue.purge_dead_letters)
        if args.json:
            _print_json({"purged": purged})
        else:
            print(f"{purged} purged")
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> None:
    from nexus_ingest import queue

    async def replay(pool: Any) -> list[tuple[int, int]]:
        if args.all:
            letters = await queue.dead_letters(pool, limit=await queue.dead_letter_count(pool))
            batches = replay_batches((int(d.msg_id), d.session_id) for d in letters)
        else:
            batches = replay_batches((i, None) for i in args.ids)
        slots = asyncio.Semaphore(args.concurrency)
        with _progress("replaying", sum(len(b) for b in batches)) as advance:

            async def one(batch: list[int]) -> list[tuple[int, int]]:
                async with slots:
                    done = await queue.replay_dead_letters(pool, msg_ids=batch)
                advance(len(batch))
                return done

            results = await asyncio.gather(*(one(batch) for batch in batches))
        return sorted(pair for result in results for pair in result)

    replayed = _with_pool(settings, replay, connections=args.concurrency + 1)
    missing = sorted(set(args.ids or ()) - {dead_id for dead_id, _ in replayed})
    if args.json:
        pairs = [{"deadLetterId": d, "messageId": m} for d, m in replayed]
        _print_json({"replayed": pairs, "missing": missing})
    else:
        for dead_id, new_id in replayed:
            print(f"replayed dead letter {dead_id} as message {new_id}")
        print(f"{len(replayed)} replayed")
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise NexusError(f"not in the dead-letter queue: {shown}")


def replay_batches(letters: Iterable[tuple[int, str | None]], size: int = 100) -> list[list[int]]:
    """Dead letters in batches of about `size`, oldest first; one session's never split.

    Batches are replayed side by side: a session split across two could come back out of order.
    """
    sessions: dict[object, list[int]] = {}
    for msg_id, session in sorted(letters, key=lambda letter: letter[0]):
        sessions.setdefault(session if session is not None else ("id", msg_id), []).append(msg_id)
    batches: list[list[int]] = []
    for ids in sessions.values():
        if not batches or len(batches[-1]) + len(ids) > size:
            batches.append([])
        batches[-1].extend(ids)
    return batches


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


def _fingerprint(text: str) -> str:
    """A visitor's fingerprint as the producer takes it: never blank. Forgetting a blank one
    (an unset shell variable) would erase nobody and still print counts, read as done."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a fingerprint must not be blank")
    return text


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest.store import forget_prospect

    _confirm(f"Erase everything held about visitor {args.fingerprint!r}?", yes=args.yes)
    counts = _with_pool(settings, lambda pool: forget_prospect(pool, args.fingerprint))
    if args.json:
        _print_json({"deleted": counts})
    else:
        print(", ".join(f"{name}: {count}" for name, count in counts.items()))
    return 0


def cmd_supabase(args: argparse.Namespace, settings: Settings) -> int:
    from nexus_ingest import supabase

    if args.action == "bundle":
        if args.output is None:
            sys.stdout.write(supabase.bundle())
        else:
            args.output.write_text(supabase.bundle(), encoding="utf-8")
            print(f"wrote {args.output}", file=sys.stderr)
        return 0
    written = supabase.export(args.project)
    for path in written:
        print(path)
    if not written:
        print("supabase/migrations has every Nexus migration already", file=sys.stderr)
    return 0


def _confirm(question: str, *, yes: bool) -> None:
    """Go on with `--yes`, or when a person at a terminal says so; refuse otherwise."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise NexusError(f"{question} Pass --yes to confirm (there is no terminal to ask on)")
    from rich.prompt import Confirm

    if not Confirm.ask(question, default=False):
        raise NexusError("not confirmed; nothing was changed")


@contextlib.contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal; `advance(n)` moves it."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def _print_json(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False, default=str))


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
    from nexus_ingest.evaluate import evaluate, format_report, load_dataset, report_as_json
    from nexus_ingest.extract import build_extractor

    examples = load_dataset(args.dataset)

    async def score() -> Any:
        extractor = build_extractor(settings)
        try:
            with _progress("extracting", len(examples)) as advance:
                return await evaluate(
                    examples, extractor, concurrency=args.concurrency, on_done=lambda: advance(1)
                )
        finally:
            await extractor.aclose()

    report = _run(score())
    print(json.dumps(report_as_json(report)) if args.json else format_report(report))
    return 0
