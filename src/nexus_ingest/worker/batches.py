"""Message Batches: backlog snapshots sent to the provider together at half price, tracked until
their answers come back, then settled like any other extraction.

Snapshots the extraction policy marks as backlog are gathered for a moment and submitted as one
batch. The batch is recorded in the database (`nexus.llm_batches`) and its messages stay hidden
while it runs; their sessions are released, so a visitor who comes back is not kept waiting by
it. Every `poll_s` the worker renews its claim on its batches, which hides their messages for
longer, and collects those that ended. A worker that stops releases its claims; one that dies
loses them after a while. Either way the next worker to poll takes the batch over and collects
its results: a batch already paid for is never submitted again.

An answer the batch could not use (no tool call, a refused request) is asked again directly,
with the direct call's re-ask; a passing failure (overloaded, expired, canceled) is settled as
a retry, and its snapshot comes back later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from uuid import uuid4

import structlog

from nexus_ingest.errors import DatabaseUnavailable, ExtractionError, Permanent, RetryLater
from nexus_ingest.extract.base import BatchExtractor, BatchResult, Extraction
from nexus_ingest.queue import OpenBatch
from nexus_ingest.worker.plan import WorkItem
from nexus_ingest.worker.process import Extracted, Failed, extract_item
from nexus_ingest.worker.settle import Settler

log = structlog.get_logger("nexus.worker")

# How long backlog snapshots wait for others to share their batch, and how many one batch
# takes (Anthropic allows 100,000 requests or 256 MB; ours are ~25 KB each).
GATHER_S = 1.0
MAX_REQUESTS = 1_000
_NO_ANSWER = RetryLater("the batch's results held no answer for this snapshot")


class BatchTracker:
    """One worker's Message Batches: gathers backlog snapshots, submits them, polls, settles."""

    def __init__(
        self,
        api: BatchExtractor,
        settler: Settler,
        *,
        poll_s: float,
        vt_s: float,
        gather_s: float = GATHER_S,
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        self.api = api
        self.settler = settler
        self.owner = uuid4()
        self.poll_s = poll_s
        # A claim outlives a few polls, so a slow poll never hands a live batch to another worker.
        self.claim_s = max(float(vt_s), 3 * poll_s)
        self.gather_s = gather_s
        self.max_requests = max_requests
        self._gathered: list[WorkItem] = []
        self._gathered_at = 0.0
        self._submitted: set[str] = set()  # this process's batches' ids
        self._unrecorded: dict[str, list[WorkItem]] = {}  # submitted, not yet in the database
        self._wake = asyncio.Event()
        self._recording = asyncio.Lock()

    def add(self, items: Sequence[WorkItem]) -> None:
        """Queue backlog snapshots for the next batch."""
        if not items:
            return
        if not self._gathered:
            self._gathered_at = time.monotonic()
            self._wake.set()
        self._gathered.extend(items)
        if len(self._gathered) >= self.max_requests:
            self._wake.set()

    async def claim(self) -> list[OpenBatch]:
        """Claim this worker's batches and any nobody polls any more, hiding their messages."""
        return await self.settler.claim_batches(self.owner, self.claim_s)

    async def run(self) -> None:
        """Submit what is gathered and collect what ended, until cancelled.

        Polling runs beside submitting, not before it: collecting an ended batch may take
        minutes (each unusable answer is asked again directly), while what is gathered holds
        only a read's lease of `vt_s`. Waiting behind a collection, it would be read again at
        every lease's end, each read counted toward the dead-letter queue.
        """
        polling = asyncio.create_task(self._poll_every())
        try:
            await self._submit_gathered()
        finally:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling

    async def _submit_gathered(self) -> None:
        while True:
            wait = None
            if self._gathered:
                wait = max(0.0, self._gathered_at + self.gather_s - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            full = len(self._gathered) >= self.max_requests
            if self._gathered and (full or time.monotonic() >= self._gathered_at + self.gather_s):
                await _logged("batch.submit_failed", self.submit)

    async def _poll_every(self) -> None:
        while True:
            await _logged("batch.poll_failed", self.poll)
            await asyncio.sleep(self.poll_s)

    async def submit(self) -> None:
        """Send what is gathered as one batch (or as many as it takes) and record it."""
        while self._gathered:
            items = self._gathered[: self.max_requests]
            del self._gathered[: self.max_requests]
            await self._submit(items)

    async def _submit(self, items: list[WorkItem]) -> None:
        # Hidden first, on the database's clock: the upload may outlast the reads' leases, and
        # a snapshot read again meanwhile would go in a second batch and be paid for twice.
        items = await self.settler.reserve_for_batch(items, self.claim_s)
        if not items:
            return
        snapshots = {str(item.message.msg_id): item.snapshot.messages for item in items}
        try:
            batch_id = await self.api.submit_batch(snapshots)
        except RetryLater as exc:
            await self._settle([], [Failed(item, exc) for item in items])
            return
        except ExtractionError:  # the provider refused the batch itself: ask for each alone
            await self._settle(*await self._directly(items))
            return
        self._unrecorded[batch_id] = items
        await self._record()
        log.info("batch.submitted", batch_id=batch_id, size=len(items))

    async def _record(self) -> None:
        """Record submitted batches in the database; one that could not be is tried again at
        the next poll, before its messages reappear."""
        async with self._recording:  # a submission and a poll may both record
            for batch_id, items in list(self._unrecorded.items()):
                await self.settler.batched(batch_id, items, owner=self.owner, claim_s=self.claim_s)
                del self._unrecorded[batch_id]
                self._submitted.add(batch_id)

    async def poll(self) -> None:
        """Renew the claims, take over abandoned batches, and collect every batch that ended."""
        await self._record()
        known = set(self._submitted)  # not one recorded while claiming, which is ours
        claimed = await self.claim()
        ours = {batch.batch_id for batch in claimed}
        for lost in known - ours:  # another worker took it over
            self._submitted.discard(lost)
        for batch in claimed:
            await _logged("batch.poll_failed", functools.partial(self._poll_one, batch))

    async def _poll_one(self, batch: OpenBatch) -> None:
        try:
            progress = await self.api.batch_progress(batch.batch_id)
            if not progress.ended:
                return
            results = await self.api.batch_results(batch.batch_id)
        except Permanent as exc:  # the provider no longer knows it: its snapshots come back
            log.error("batch.lost", batch_id=batch.batch_id, error=str(exc)[:200])
            self._submitted.discard(batch.batch_id)
            await self.settler.batch_lost(batch.batch_id)
            return
        await self._collect(batch, results)

    async def _collect(self, batch: OpenBatch, results: dict[str, BatchResult]) -> None:
        """Save every answer of an ended batch, retry or re-ask the rest, then forget it; the
        claims are renewed meanwhile, as polling would (asking again directly may take longer
        than a claim lasts, and another worker would then collect the batch and pay again)."""
        renewing = asyncio.create_task(self._keep_claims())
        try:
            await self._collect_claimed(batch, results)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _keep_claims(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            with contextlib.suppress(DatabaseUnavailable):
                await self.claim()

    async def _collect_claimed(self, batch: OpenBatch, results: dict[str, BatchResult]) -> None:
        self._submitted.discard(batch.batch_id)
        # Read back whoever submitted it (this process, one before a restart, another worker),
        # unleased, and only what is still queued: a snapshot erased while the batch ran
        # (`nexus forget`) is not sent to the model again, nor is anything recorded about it.
        items = await self.settler.queued_items(batch.msg_ids)
        started = time.perf_counter()
        extracted: list[Extracted] = []
        failed: list[Failed] = []
        unusable: list[WorkItem] = []
        for item in items:
            result = results.get(str(item.message.msg_id), _NO_ANSWER)
            if isinstance(result, Extraction):
                extracted.append(Extracted(item, result, started))
            elif isinstance(result, Permanent):
                unusable.append(item)
            else:
                failed.append(Failed(item, result))
        asked, still_failed = await self._directly(unusable)
        await self._settle([*extracted, *asked], [*failed, *still_failed])
        await self.settler.batch_settled(batch.batch_id)
        log.info(
            "batch.collected",
            batch_id=batch.batch_id,
            answered=len(extracted),
            asked_directly=len(unusable),
            retried=len(failed),
        )

    async def _directly(self, items: Sequence[WorkItem]) -> tuple[list[Extracted], list[Failed]]:
        """Ask for each snapshot with a direct call (and its one re-ask)."""
        extracted: list[Extracted] = []
        failed: list[Failed] = []
        for item in items:
            result = await extract_item(self.api, item)
            if isinstance(result, Extracted):
                extracted.append(result)
            else:
                failed.append(result)
        return extracted, failed

    async def _settle(self, extracted: Sequence[Extracted], failed: Sequence[Failed]) -> None:
        if extracted:
            await self.settler.save(extracted)
        for failure in failed:
            await self.settler.fail(failure)

    async def close(self) -> None:
        """Let another worker take this one's batches over at once; what was gathered and not
        submitted comes back after its visibility timeout."""
        with contextlib.suppress(DatabaseUnavailable):
            await self.settler.release_batches(self.owner)


async def _logged(event: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run one step of the tracker; a failure is logged and tried again at the next tick."""
    try:
        await work()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # no provider or database hiccup may stop the tracker
        log.warning(event, error=type(exc).__name__)
