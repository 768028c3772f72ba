"""The worker's loop: read (one batch ahead), dispatch to the extractor, wake on notifications,
stop cleanly. Database work is the settler's; saving is the save buffer's; when an LLM call is
made is the pacer's, and Message Batches are the batch tracker's."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.db import kept_alive, named
from nexus_ingest.errors import DatabaseUnavailable, RetryLater
from nexus_ingest.extract.base import BatchExtractor, Extractor
from nexus_ingest.stopping import hurried
from nexus_ingest.worker.batches import BatchTracker
from nexus_ingest.worker.buffer import SaveBuffer
from nexus_ingest.worker.config import WorkerConfig, read_size
from nexus_ingest.worker.pace import Pacer
from nexus_ingest.worker.plan import BatchPlan, WorkItem
from nexus_ingest.worker.process import Extracted, Failed, extract_item, extract_items
from nexus_ingest.worker.settle import Settler

log = structlog.get_logger("nexus.worker")

NOTIFY_CHANNEL = f"pgmq.q_{queue.QUEUE}.INSERT"
# Insert notifications are throttled: a database session notifies at most once in this long
# (`nexus.notify_queue_insert`, migration 011), so an insert that follows its session's last
# notification more closely is silent. Only such an insert needs finding without one.
_NOTIFY_THROTTLE_S = 0.1
# After activity, poll briefly so that a silent insert waits milliseconds, not a whole poll
# interval: for the throttle's interval after the notification, and as long again for the
# inserts' transactions to commit. Every poll is a read, so no longer: with a 1 s window a
# snapshot every half second kept the worker reading 50 times a second, 24 reads a snapshot.
_HOT_WINDOW_S = 2 * _NOTIFY_THROTTLE_S
_HOT_POLL_S = 0.02
# A read that came back short found the queue empty behind it: snapshots are arriving one by
# one. Reading again at once would take them one by one too, a read and a save each; letting
# them gather this long first shares those round trips for a few milliseconds of latency (at
# 500 snapshots a second under `nexus up`: the worker 41 -> 36% of a core, Postgres 60 -> 52%).
# Not longer: each read and save would be a burst of its backend's CPU that the API's requests
# queue behind (`nexus up`'s p99 over the HTTP floor's: 3.1x at 10 ms, 3.3x at 3, 3.7x at 0,
# 4.2x at 100). Offline extractors only: an LLM worker reads as slots free up.
_GATHER_S = 0.01
# While the database is away, the listener tries to reconnect at least this often: a connection
# attempt is cheap, and the listener coming back is what wakes a reader deep in its back-off.
_LISTEN_RETRY_CAP_S = 2.0


class Worker:
    """One consumer process's loop; several may run against the same queue."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        extractor: Extractor,
        config: WorkerConfig,
        listen_url: str | None = None,
    ) -> None:
        self.extractor = extractor
        self.config = config
        self.listen_url = listen_url
        self.pausing_for: float | None = None  # how long the reader is waiting now, if it is
        self._wake = asyncio.Event()
        self.settler = Settler(pool, config)
        # An LLM call holds its session for seconds, and a newer snapshot of that session is
        # not readable meanwhile (the idle reader waits for the lease, not polling for it):
        # settling the call's message releases the session, so look again then. An offline
        # extractor's saves follow its reads within milliseconds, which its hot polling covers.
        self._wake_on_settled = not extractor.in_process
        self.saves = SaveBuffer(
            self.settler.save,
            batch_size=config.batch_size,
            on_saved=self._wake.set if self._wake_on_settled else None,
        )
        self.batches = _batch_tracker(extractor, self.settler, config)
        self.pacer = _pacer(extractor, self.settler, config, batching=self.batches is not None)
        self._slots = asyncio.Semaphore(config.concurrency)
        # Each extraction in flight, with the snapshot it works on.
        self._tasks: dict[asyncio.Task[None], WorkItem] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Process messages until `stop` is set, then finish in-flight work within the grace period."""
        background = [asyncio.create_task(self.saves.run())]
        if self.listen_url:
            background.append(asyncio.create_task(self._listen(self.listen_url)))
        if self.batches is not None:
            # Batches left by a stopped worker are claimed (their messages hidden) before the
            # first read, so none of their snapshots is read and paid for twice.
            with contextlib.suppress(DatabaseUnavailable):
                await self.batches.claim()
            background.append(asyncio.create_task(self.batches.run()))
        log.info(
            "worker.started", extractor=self.extractor.name, concurrency=self.config.concurrency
        )
        try:
            await self._read_loop(stop)
        finally:
            await self._finish_in_flight(hurried(stop))
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self.batches is not None:
                await self.batches.close()
            log.info("worker.stopped")

    async def _read_loop(self, stop: asyncio.Event) -> None:
        backoff, hot_until = 0.5, 0.0
        ahead: asyncio.Task[BatchPlan | None] | None = None
        try:
            while not stop.is_set():
                try:
                    pending, ahead = ahead, None  # a failed read must not be awaited again
                    plan = await (pending if pending is not None else self._read())
                    full = plan is not None and plan.size >= self.config.batch_size
                    if full and self.extractor.in_process:
                        # Read the next batch while this one is extracted, so the database
                        # works on it meanwhile instead of waiting for us. A task starts at our
                        # next suspension, and extracting in process never suspends: yield once
                        # so the read's statement is sent before extraction takes the thread.
                        ahead = asyncio.create_task(self._read())
                        await asyncio.sleep(0)
                    found = await self._dispatch(plan) if plan is not None else 0
                    backoff = 0.5
                except DatabaseUnavailable:
                    log.warning("worker.database_unavailable", retry_in_s=backoff)
                    # The listener reconnecting wakes us: a back-off grown long while nothing
                    # answered must not keep the reader asleep once the database is back.
                    await _wait_any(stop, self._wake, backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                except Exception as exc:  # no batch may stop the worker: its messages come back
                    log.error(
                        "worker.unexpected_error", error=type(exc).__name__, retry_in_s=backoff
                    )
                    await _wait_any(stop, None, backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                now = time.monotonic()
                if found or self._wake.is_set():
                    hot_until = now + _HOT_WINDOW_S
                if found:
                    if not full and self.extractor.in_process:
                        await _wait_any(stop, None, _GATHER_S)
                    continue
                pause = _HOT_POLL_S if now < hot_until else await self._idle_pause()
                self.pausing_for = pause
                await _wait_any(stop, self._wake, pause)
                self.pausing_for = None
        finally:
            if ahead is not None:  # what was read ahead is leased to us: finish it too
                with contextlib.suppress(DatabaseUnavailable):
                    plan = await ahead
                    if plan is not None:
                        await self._dispatch(plan)

    async def _idle_pause(self) -> float:
        """Sleep until the next held-back snapshot becomes readable, or one poll interval."""
        try:
            due = await self.settler.seconds_until_visible()
        except DatabaseUnavailable:
            return self.config.poll_interval_s
        if due is None:
            return self.config.poll_interval_s
        return min(self.config.poll_interval_s, due + 0.005)

    async def _read(self) -> BatchPlan | None:
        qty = await self._room()
        self._wake.clear()
        return await self.settler.read(qty)

    async def _room(self) -> int:
        """How many messages to read now; an LLM worker first waits for a free slot."""
        if not self.extractor.in_process:
            await self._slots.acquire()
            self._slots.release()
        return read_size(self.config, self.extractor, in_flight=len(self._tasks))

    async def _dispatch(self, plan: BatchPlan) -> int:
        """Start work on a batch; returns how many messages it held."""
        if self.extractor.in_process:
            # Pure computation: tasks would only add overhead, and nothing waits on I/O.
            results = await extract_items(self.extractor, plan.work)
            done = [
                ok for result in results if (ok := await self._unless_failed(result)) is not None
            ]
            if done:
                await self.saves.put(done)
        else:
            for item in await self._now(plan.work):
                await self._slots.acquire()
                task = asyncio.create_task(self._extract_in_slot(item))
                self._tasks[task] = item
                task.add_done_callback(self._forget_task)
        return plan.size

    async def _now(self, work: list[WorkItem]) -> list[WorkItem]:
        """The items to extract now: the pacer defers some and gives some to the batch tracker."""
        if self.pacer is None or not work:
            return work
        paced = await self.pacer.pace(work)
        if self.batches is not None:
            self.batches.add(paced.batch)
        return paced.now

    async def _extract_in_slot(self, item: WorkItem) -> None:
        try:
            result = await self._extract(item)
        finally:
            self._slots.release()
        if result is not None:
            await self.saves.put([result])

    async def _extract(self, item: WorkItem) -> Extracted | None:
        """Extract one snapshot; a failure is settled at once (retried or dead-lettered).

        An extraction may last no longer than the session's lease (a tenth is kept for the
        save): past it, another reader would take the snapshot and pay for it again. However
        long each call may take, a call and its re-ask together could outlast it.
        """
        budget_s = 0.9 * self.config.vt_s
        try:
            async with asyncio.timeout(budget_s):
                result = await extract_item(self.extractor, item)
        except TimeoutError:
            late = RetryLater(f"the extraction took longer than its lease allows ({budget_s:g} s)")
            result = Failed(item, late)
        return await self._unless_failed(result)

    async def _unless_failed(self, result: Extracted | Failed) -> Extracted | None:
        """The extraction; a failure is settled at once (retried or dead-lettered) instead."""
        if isinstance(result, Extracted):
            return result
        await self.settler.fail(result)
        if self._wake_on_settled:
            self._wake.set()
        return None

    async def _listen(self, url: str) -> None:
        """Wake the reader on every insert notification; reconnect with back-off if the link drops."""
        backoff = 0.5
        while True:
            try:
                listener = psycopg.AsyncConnection.connect(
                    named(kept_alive(url), "nexus worker"), autocommit=True
                )
                async with await listener as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                    backoff = 0.5
                    self._wake.set()  # catch anything that arrived while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _LISTEN_RETRY_CAP_S)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def _finish_in_flight(self, hurry: asyncio.Event | None = None) -> None:
        """Give in-flight work the grace period (cut short when `hurry` is set), then cancel it
        and give its snapshots back, readable at once rather than after their visibility
        timeout."""
        pending = set(self._tasks)
        if pending:
            late = await _unfinished(pending, self.config.shutdown_grace_s, hurry)
            cut_short = [self._tasks[task] for task in late if task in self._tasks]
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5.0)  # their slots freed, their calls closed
            if cut_short:
                with contextlib.suppress(DatabaseUnavailable):
                    await self.settler.give_back(cut_short)
        hurrying = hurry is not None and hurry.is_set()
        await self.saves.drain(timeout=1.0 if hurrying else max(1.0, self.config.shutdown_grace_s))


async def _unfinished(
    tasks: set[asyncio.Task[None]], timeout: float, hurry: asyncio.Event | None
) -> set[asyncio.Task[None]]:
    """The tasks still running after `timeout` seconds, or as soon as `hurry` is set."""
    # Cancelling these waiters leaves the tasks themselves running.
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.wait(tasks))}
    if hurry is not None:
        waiters.add(asyncio.ensure_future(hurry.wait()))
    await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    return {task for task in tasks if not task.done()}


def _batch_tracker(
    extractor: Extractor, settler: Settler, config: WorkerConfig
) -> BatchTracker | None:
    """A tracker for an extractor that has Message Batches, even with batching off: it still
    collects a batch submitted before a restart."""
    if not isinstance(extractor, BatchExtractor):
        return None
    return BatchTracker(extractor, settler, poll_s=config.batch_poll_s, vt_s=config.vt_s)


def _pacer(
    extractor: Extractor, settler: Settler, config: WorkerConfig, *, batching: bool
) -> Pacer | None:
    """The extraction policy for an LLM extractor; None for the offline ones, which cost
    nothing and keep their path (and its speed) exactly."""
    policy = config.policy
    if policy is None or extractor.in_process:
        return None
    if not batching:
        policy = dataclasses.replace(policy, batch_min_age_s=None)
    return Pacer(settler, policy, config.policy_clock)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.create_task(wake.wait()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
