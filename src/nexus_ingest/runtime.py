"""Running the service and the worker until SIGINT/SIGTERM, then stopping cleanly.

`nexus serve` and `nexus worker` each run one event loop. `nexus up` runs the API here and the
worker as a child process it supervises: on one event loop the worker's CPU work (decoding,
extraction) held the API's answers back, and a worker that died would take the API with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

import structlog

from nexus_ingest.db import open_pool
from nexus_ingest.errors import NexusError
from nexus_ingest.extract import build_extractor
from nexus_ingest.maintenance import Retention, maintenance_loop
from nexus_ingest.metrics import MULTIPROCESS_DIR_VARIABLE
from nexus_ingest.settings import Settings
from nexus_ingest.stopping import Stop, hurried
from nexus_ingest.telemetry import configure_tracing, shutdown_tracing
from nexus_ingest.worker import Worker, worker_config

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from nexus_ingest.probes import WorkerProbe

log = structlog.get_logger("nexus")


def _tune_garbage_collector() -> None:
    """Fewer, cheaper collections: full collections of start-up objects showed up as latency spikes.

    No collection first: it would cost a worker ~20 ms of start-up to reclaim next to nothing.
    """
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _stop_on_signals() -> Stop:
    stop = Stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.signal)
    return stop


async def serve_api(settings: Settings, database_url: str, stop: asyncio.Event) -> None:
    """Serve HTTP until `stop` is set."""
    from nexus_ingest.api import create_app
    from nexus_ingest.server import bounded_protocol

    protocol = bounded_protocol(settings.max_header_bytes, settings.request_timeout_s)
    await _serve_http(
        create_app(settings, database_url), settings.host, settings.port, stop, http=protocol
    )


async def _serve_http(
    app: ASGIApp, host: str, port: int, stop: asyncio.Event, *, http: Any = "auto"
) -> None:
    """Serve `app` with uvicorn until `stop` is set."""
    ensure_port_free(host, port)
    # Imported here so a worker on its own does not pay for the web stack at start-up.
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=http,
        proxy_headers=True,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=75,  # longer than clients and proxies keep idle connections
    )

    class _Server(uvicorn.Server):
        """uvicorn without its own signal handling: our stop event decides when to exit."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    server = _Server(config)
    serving = asyncio.create_task(_serve_or_fail(server, host, port))
    await asyncio.wait(
        [serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    server.should_exit = True
    await serving
    if server.started is False and not stop.is_set():
        raise OSError(f"could not serve on {host}:{port}")


async def _serve_or_fail(server: Any, host: str, port: int) -> None:
    """uvicorn calls sys.exit when it cannot start (its port taken since `ensure_port_free`, or
    the app's start-up failed); that would end the event loop mid-task, with uvicorn's exit
    code and no error line. Here it is an error like any other."""
    try:
        await server.serve()
    except SystemExit:
        raise NexusError(f"could not serve on {host}:{port} (see the log above)") from None


def ensure_port_free(host: str, port: int) -> None:
    """Raise a one-line `NexusError` unless `host:port` can be listened on right now.

    A trial bind on every address the host resolves to, as the server binds them (address
    reuse on, so connections of an earlier run in TIME_WAIT do not count), then closed.
    """
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise NexusError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                trial.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                trial.bind(address)
            except OSError as exc:
                raise _cannot_listen(exc, host, port) from None


def _cannot_listen(exc: OSError, host: str, port: int) -> NexusError:
    if exc.errno == errno.EADDRINUSE:
        return NexusError(f"port {port} on {host} is already in use")
    return NexusError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


async def run_worker(
    settings: Settings, database_url: str, stop: asyncio.Event, *, probe_port: int | None = None
) -> None:
    """Consume the queue until `stop` is set; with `probe_port`, answer /metrics, /healthz, /readyz."""
    extractor = build_extractor(settings)
    pool = await open_pool(
        database_url,
        min_size=2,
        max_size=max(4, settings.worker_concurrency + 2),
        synchronous_commit=settings.worker_synchronous_commit,
        application_name="nexus worker",
    )
    try:
        worker = Worker(pool, extractor, worker_config(settings), listen_url=database_url)
        # One coroutine of `worker.run` only: one made and dropped is a "never awaited" warning.
        jobs: list[Coroutine[Any, Any, None]] = (
            [worker.run(stop)]
            if probe_port is None
            else _probed_worker_jobs(worker, pool, settings.host, probe_port, stop)
        )
        if settings.maintenance_interval_s > 0:
            jobs.append(
                maintenance_loop(
                    pool,
                    Retention(
                        archive_days=settings.retention_archive_days,
                        history_days=settings.retention_history_days,
                        dead_letter_days=settings.retention_dead_letter_days,
                    ),
                    interval_s=settings.maintenance_interval_s,
                    stop=stop,
                )
            )
        await asyncio.gather(*jobs)
    finally:
        await pool.close()
        await extractor.aclose()


def _probed_worker_jobs(
    worker: Worker, pool: Any, host: str, port: int, stop: asyncio.Event
) -> list[Coroutine[Any, Any, None]]:
    """The worker's loop, watched by a probe that answers /metrics, /healthz, /readyz on `port`."""
    from nexus_ingest.probes import WorkerProbe, worker_app

    probe = WorkerProbe(pool)
    return [
        _while_running(worker.run(stop), probe),
        probe.watch(stop),
        _serve_http(worker_app(probe), host, port, stop),
    ]


async def _while_running(loop: Coroutine[Any, Any, None], probe: WorkerProbe) -> None:
    probe.running = True
    try:
        await loop
    finally:
        probe.running = False


async def run(settings: Settings, database_url: str, *, api: bool, worker: bool) -> None:
    """Run the API, the worker, or both, until SIGINT/SIGTERM; a crash of one stops the other."""
    stop = _stop_on_signals()
    _tune_garbage_collector()
    configure_tracing("nexus")
    tasks = []
    if api:
        tasks.append(asyncio.create_task(serve_api(settings, database_url, stop)))
    if worker:
        # A worker on its own still answers Prometheus and an orchestrator's probes.
        probe_port = None if api else settings.worker_metrics_port
        tasks.append(
            asyncio.create_task(run_worker(settings, database_url, stop, probe_port=probe_port))
        )
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    shutdown_tracing()
    for task in done:
        if task.exception():
            raise task.exception()  # type: ignore[misc]


# A worker that ran this long before it exited is started again at once; one that keeps
# exiting sooner is started again after a back-off, doubled each time up to the cap.
_HEALTHY_RUN_S = 60.0
_RESTART_CAP_S = 30.0


async def run_up(settings: Settings, database_url: str) -> None:
    """The API in this process and the worker in a child process, until SIGINT/SIGTERM."""
    stop = _stop_on_signals()
    _tune_garbage_collector()
    configure_tracing("nexus")
    tasks = [
        asyncio.create_task(serve_api(settings, database_url, stop)),
        asyncio.create_task(supervise_worker(database_url, stop, settings.worker_shutdown_grace_s)),
    ]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    shutdown_tracing()
    for task in done:
        if task.exception():
            raise task.exception()  # type: ignore[misc]


async def supervise_worker(database_url: str, stop: asyncio.Event, grace_s: float) -> None:
    """Run `nexus worker` as a child process until `stop` is set, starting it again whenever
    it exits on its own; on `stop`, give it its grace period to finish, then end it."""
    backoff = 1.0
    while not stop.is_set():
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nexus_ingest",
            "worker",
            "--migrated",
            env=_worker_env(database_url),
        )
        started = time.monotonic()
        log.info("worker.process_started", pid=child.pid)
        exited = asyncio.create_task(child.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            await _end_child(child, exited, grace_s, hurried(stop))
            return
        _forget_metrics_of(child.pid)
        if time.monotonic() - started > _HEALTHY_RUN_S:
            backoff = 1.0
        log.error(
            "worker.process_exited", pid=child.pid, code=child.returncode, restart_in_s=backoff
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=backoff)
        backoff = min(backoff * 2, _RESTART_CAP_S)


# The API and its worker share the machine's cores; the worker yields them to requests (the
# kernel runs a process niced 10 about a tenth as much as a competing one), so a backlog is
# drained with what the API leaves. Measured in bench/producer.py ("nexus up").
_UP_WORKER_NICE = "10"


def _worker_env(database_url: str) -> dict[str, str]:
    """The child's environment: this one's, on the database this process resolved, without a
    probe port of its own (the API answers for both), and niced unless told otherwise."""
    env = {"NEXUS_WORKER_NICE": _UP_WORKER_NICE, **os.environ, "DATABASE_URL": database_url}
    env.pop("NEXUS_WORKER_METRICS_PORT", None)
    return env


async def _end_child(
    child: asyncio.subprocess.Process,
    exited: asyncio.Task[int],
    grace_s: float,
    hurry: asyncio.Event | None,
) -> None:
    """SIGTERM the worker and give it its grace period; a second signal to this process is
    passed on, so the worker stops at once too. Past the grace (and 5 s more), SIGKILL."""
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
    wait_s = grace_s + 5
    if hurry is not None:
        hurrying = asyncio.create_task(hurry.wait())
        await asyncio.wait({exited, hurrying}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        hurrying.cancel()
        if hurry.is_set() and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            wait_s = 5
    try:
        await asyncio.wait_for(asyncio.shield(exited), timeout=wait_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await exited


def _forget_metrics_of(pid: int) -> None:
    """A dead process's gauges leave the merged metrics; its counters' totals stay."""
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
