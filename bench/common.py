"""What every benchmark needs: a fresh database, a `nexus` process, a table of figures."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from pgmq.install import get_embedded_install_sql
from psycopg import sql

from nexus_ingest.migrate import migrate

NEXUS = str(Path(sys.executable).with_name("nexus"))
QUEUE_TABLE = "pgmq.q_nexus_prospect_ingestion"
PRODUCER_PATH = "/api/nexus/producer"


def admin_url() -> str:
    """The server to benchmark on: DATABASE_URL when set, else the embedded one."""
    from nexus_ingest import embedded

    return embedded.resolve(os.environ.get("DATABASE_URL"), None).url


# Which PGMQ a benchmark database starts with: what `nexus migrate` chooses on this server
# (None), the SQL-only PGMQ of the `pgmq` package, or a version of the pgmq extension.
SQL_ONLY = "sql-only"


@contextmanager
def empty_database() -> Iterator[str]:
    """A new database on the benchmark server with nothing in it, dropped afterwards."""
    admin = admin_url()
    name = f"nexus_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def fresh_database(pgmq: str | None = None) -> Iterator[str]:
    """A new, migrated database on PGMQ `pgmq` (see SQL_ONLY), dropped afterwards."""
    with empty_database() as url:
        _install_pgmq(url, pgmq)
        migrate(url)
        yield url


def _install_pgmq(url: str, pgmq: str | None) -> None:
    if pgmq is None:
        return
    with psycopg.connect(url) as conn:
        if pgmq == SQL_ONLY:
            conn.execute(get_embedded_install_sql())
        else:
            conn.execute(sql.SQL("CREATE EXTENSION pgmq VERSION {}").format(sql.Literal(pgmq)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_env(database_url: str, port: int | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "NEXUS_LOG_LEVEL": "WARNING",
            "NEXUS_RATE_LIMIT_IP_PER_MINUTE": "0",
            "NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE": "0",
            **extra,
        }
    )
    if port:
        env["NEXUS_PORT"] = str(port)
    return env


@contextmanager
def nexus(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`nexus ARGS...` as a child process, terminated on exit."""
    with process([NEXUS, *args], env) as proc:
        yield proc


@contextmanager
def process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output discarded, terminated (killed after 20 s) on exit."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_serving(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def run_loadgen(url: str, rate: float, duration: float, warmup: float = 1.0) -> dict[str, object]:
    """Drive `url` at `rate` requests a second for `duration` seconds from a separate process."""
    argv = [sys.executable, "-m", "bench.loadgen", "--url", url, "--rate", str(rate)]
    argv += ["--duration", str(duration), "--warmup", str(warmup)]
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=duration + warmup + 120
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


@dataclass(frozen=True)
class Cost:
    """What each message drained after start-up cost the machine (the server's CPU is None
    when it runs on another host)."""

    wal_bytes: float  # WAL the server wrote
    consumer_cpu_us: float  # the consumers' processes
    postgres_cpu_us: float | None  # every process of the server

    def figures(self) -> dict[str, object]:
        return {
            "wal_bytes_per_msg": round(self.wal_bytes),
            "consumer_cpu_us_per_msg": round(self.consumer_cpu_us, 1),
            "postgres_cpu_us_per_msg": (
                None if self.postgres_cpu_us is None else round(self.postgres_cpu_us, 1)
            ),
        }

    def snapshot_figures(self) -> dict[str, object]:
        """The same, for a pipeline that posts what it consumes (`nexus up`): a snapshot."""
        return {
            key.replace("consumer", "nexus").replace("_msg", "_snapshot"): value
            for key, value in self.figures().items()
        }


@dataclass(frozen=True)
class Drained:
    """How one drain went, timed from the consumers' spawn."""

    seconds: float  # spawn to an empty queue
    startup_s: float  # spawn to the first message gone
    steady_msgs_per_s: float  # while 95% to 5% of the backlog was left: start-up and tail apart
    peak_rss: int  # bytes, the largest of the consumer processes
    cost: Cost | None = None

    def figures(self, count: int) -> dict[str, object]:
        """The columns every drain reports, whoever the consumer."""
        return {
            "drain_s": round(self.seconds, 2),
            "msgs_per_s": round(count / self.seconds),
            "startup_s": round(self.startup_s, 2),
            "steady_msgs_per_s": round(self.steady_msgs_per_s),
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            **(self.cost.figures() if self.cost else {}),
        }


POLL_S = 0.025


class _Meter:
    """CPU seconds of the consumers' processes (and their children) and of the server's, and
    the server's WAL position, from a start to an end. Processes are read at every poll, so one
    that exits (a consumer that stops on an empty queue, and its connection's backend) counts
    up to its last reading; who the processes are is looked up again every few polls only, as
    that walks every process of the machine (~3 ms)."""

    _FAMILY_EVERY = 10  # polls

    def __init__(self, conn: psycopg.Connection[Any], procs: Sequence[Any]) -> None:
        self.conn, self.procs = conn, list(procs)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        self.own_backend = int(row[0]) if row else -1  # the watcher's, left out of the figures
        self.postmaster: Any = _postmaster(self.own_backend)
        self.polls = 0
        self.families: tuple[list[Any], list[Any]] = ([], [])
        self.started: tuple[float, dict[int, float], dict[int, float]] | None = None
        self.consumers: dict[int, float] = {}
        self.server: dict[int, float] = {}

    def start(self) -> None:
        self.families = (_family(self.procs), self._server_family())
        self.started = (self._wal(), _cpu(self.families[0]), _cpu(self.families[1]))
        self.consumers, self.server = dict(self.started[1]), dict(self.started[2])

    def poll(self) -> None:
        if self.started is None:
            return
        self.polls += 1
        if self.polls % self._FAMILY_EVERY == 0:
            self.families = (_family(self.procs), self._server_family())
        self.consumers.update(_cpu(self.families[0]))
        self.server.update(_cpu(self.families[1]))

    def cost(self, messages: int) -> Cost | None:
        if self.started is None or messages <= 0:
            return None
        self.poll()
        wal, consumers, server = self.started
        per = 1e6 / messages
        return Cost(
            wal_bytes=(self._wal() - wal) / messages,
            consumer_cpu_us=_spent(consumers, self.consumers) * per,
            postgres_cpu_us=_spent(server, self.server) * per if self.postmaster else None,
        )

    def _wal(self) -> float:
        row = self.conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8"
        ).fetchone()
        return float(row[0]) if row else 0.0

    def _server_family(self) -> list[Any]:
        server = _family([self.postmaster] if self.postmaster else [])
        return [p for p in server if p.pid != self.own_backend]


def _postmaster(backend_pid: int) -> Any:
    """The server process whose backend has `backend_pid`, when that server runs on this
    machine (a backend of another host's server has no process here, or not a postgres one)."""
    import psutil

    try:
        backend = psutil.Process(backend_pid)
        return backend.parent() if backend.name().startswith("postgres") else None
    except psutil.Error:
        return None


def first_cpus(count: int) -> list[int] | None:
    """The first `count` CPUs this process may run on, when the platform lets a process be
    kept to some (Linux, Windows) and there are more than that; else None."""
    import psutil

    if not hasattr(psutil.Process, "cpu_affinity"):
        return None
    allowed = sorted(psutil.Process().cpu_affinity() or [])
    return allowed[:count] if len(allowed) > count else None


@contextmanager
def server_kept_to(url: str, cpus: list[int]) -> Iterator[bool]:
    """The benchmark server, every process of it, kept to `cpus` for the block (the backends it
    starts meanwhile inherit that); yields False, changing nothing, when its processes are not
    this machine's or not ours to change."""
    import psutil

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        postmaster = _postmaster(int(row[0])) if row else None
    if postmaster is None:
        yield False
        return
    before = postmaster.cpu_affinity()
    try:
        _keep_server_to(postmaster, cpus)
    except psutil.AccessDenied:  # not ours: denied at the postmaster, before any change
        yield False
        return
    try:
        yield True
    finally:
        _keep_server_to(postmaster, before)


def _keep_server_to(postmaster: Any, cpus: list[int]) -> None:
    import psutil

    for proc in _family([postmaster]):
        try:
            proc.cpu_affinity(cpus)
        except psutil.NoSuchProcess:  # a backend that ended meanwhile
            continue


def keep_to(procs: Sequence[subprocess.Popen[bytes]], cpus: list[int]) -> None:
    """Keep running child processes to `cpus`."""
    import psutil

    for proc in procs:
        psutil.Process(proc.pid).cpu_affinity(cpus)


def _family(roots: Sequence[Any]) -> list[Any]:
    """`roots` and all their children."""
    import psutil

    family: list[Any] = []
    for root in roots:
        try:
            family += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return family


def _cpu(procs: Sequence[Any]) -> dict[int, float]:
    """CPU seconds so far of each of `procs` still running, by pid."""
    import psutil

    seconds: dict[int, float] = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def _rss(procs: Sequence[Any]) -> int:
    """The largest resident memory of `procs` still running, in bytes."""
    import psutil

    largest = 0
    for proc in procs:
        try:
            largest = max(largest, proc.memory_info().rss)
        except psutil.Error:
            continue
    return largest


def _spent(start: dict[int, float], last: dict[int, float]) -> float:
    # A process started after the start counts from zero.
    return sum(cpu - start.get(pid, 0.0) for pid, cpu in last.items())


@contextmanager
def metered(url: str, procs: Sequence[subprocess.Popen[bytes]]) -> Iterator[_Meter]:
    """A started meter of what `procs` (and their children) and the server spend from now on;
    `.cost(messages)` before the block ends gives it a message. Processes are read every
    quarter second in the background, as `watch_drain` does between its polls."""
    import psutil

    stop = threading.Event()
    with psycopg.connect(url, autocommit=True) as conn:
        meter = _Meter(conn, [psutil.Process(p.pid) for p in procs])
        meter.start()

        def poll() -> None:
            while not stop.wait(0.25):
                meter.poll()

        poller = threading.Thread(target=poll, name="meter", daemon=True)
        poller.start()
        try:
            yield meter
        finally:
            stop.set()
            poller.join()


def watch_drain(
    url: str,
    procs: Sequence[subprocess.Popen[bytes]],
    count: int,
    remaining_sql: str = f"SELECT count(*) FROM {QUEUE_TABLE}",
    timeout: float = 600.0,
) -> Drained:
    """Poll until nothing is left, sampling what remains and the consumers' resident memory;
    from the first message gone to the last, measure what each message cost (see `Cost`)."""
    import psutil

    started = time.perf_counter()
    watched = [psutil.Process(p.pid) for p in procs]
    peak = 0
    samples: list[tuple[float, int]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        meter = _Meter(conn, watched)
        metered = 0  # messages left when metering began
        while time.perf_counter() - started < timeout:
            # A consumer that stops on an empty queue may be gone before the count shows it.
            exited = any(p.poll() is not None for p in procs)
            if not exited:
                peak = max(peak, _rss(watched))
            row = conn.execute(remaining_sql).fetchone()  # type: ignore[arg-type]
            samples.append((time.perf_counter() - started, int(row[0]) if row else 0))
            left = samples[-1][1]
            if exited and left:
                raise RuntimeError("a consumer exited before the queue was empty")
            meter.poll()
            if not metered and 0 < left < count:
                meter.start()
                metered = left
            if left == 0:
                return _drained(samples, count, peak, meter.cost(metered))
            time.sleep(POLL_S)
    raise RuntimeError(f"the backlog was not drained within {timeout}s")


def _drained(
    samples: list[tuple[float, int]], count: int, peak: int, cost: Cost | None = None
) -> Drained:
    seconds = samples[-1][0]
    startup = next((t for t, left in samples if left < count), seconds)
    middle = [(t, left) for t, left in samples if 0.05 * count < left < 0.95 * count]
    if len(middle) >= 3:
        slope = statistics.linear_regression([t for t, _ in middle], [n for _, n in middle]).slope
        steady = -slope if slope < 0 else 0.0
    else:  # too quick to sample: the rate after start-up is the best estimate
        steady = count / (seconds - startup if seconds > startup else seconds)
    return Drained(seconds, startup, steady, peak, cost)


def machine() -> str:
    """One line describing where the figures were measured."""
    with psycopg.connect(admin_url()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return (
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL {row[0] if row else '?'}, {platform.platform()}"
    )


def table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (0..1) of already sorted values, rounded to 0.01."""
    if not sorted_values:
        return 0.0
    return round(sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))], 2)
