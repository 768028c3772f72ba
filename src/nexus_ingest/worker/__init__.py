"""The consumer: reads snapshots, extracts prospects, merges them, acknowledges the messages.

One stage a module: `config` (settings), `plan` (which messages of a read need the extractor;
pure), `pace` (when an LLM extractor is called: now, later, or in a Message Batch), `process`
(one extraction, traced), `batches` (Message Batches submitted, polled and collected),
`settle` (the database side of every outcome), `buffer` (saves in batches), `loop` (the
long-running worker), `once` (the seed's one-shot consumer).
"""

from nexus_ingest.worker.config import WorkerConfig, read_size, worker_config
from nexus_ingest.worker.loop import NOTIFY_CHANNEL, Worker
from nexus_ingest.worker.once import consume_once
from nexus_ingest.worker.plan import BatchPlan, WorkItem, plan_batch

__all__ = [
    "NOTIFY_CHANNEL",
    "BatchPlan",
    "WorkItem",
    "Worker",
    "WorkerConfig",
    "consume_once",
    "plan_batch",
    "read_size",
    "worker_config",
]
