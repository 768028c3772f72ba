-- The read paths at a year's scale (a million prospects, millions of history rows and message
-- events, a large archive): what the dashboard, `nexus trace`, `nexus metrics` and the nightly
-- retention look up, indexed, so that none of them reads a whole big table (but for a search
-- and the sort by name: see 4).
--
-- Plain CREATE INDEX: the migrator runs each file in a transaction, where CONCURRENTLY is not
-- allowed. None of these tables is one the producer writes (the queue, sessions, idempotency
-- keys): a producer keeps accepting snapshots while they build. Workers, which write the
-- history and prospect rows, are stopped while upgrading (README, "Upgrading").

SET LOCAL maintenance_work_mem = '256MB';

-- 1. The history by time: the dashboard's throughput over the last hour (polled every 5 s),
--    its LLM spend over 14 days, `nexus metrics`' over 7, and the retention's delete of what
--    is older than the history period. Each read all the history (3 M rows: 0.6 to 1.4 s).
CREATE INDEX IF NOT EXISTS prospect_extractions_created_idx
    ON public.prospect_extractions (created_at);

-- 2. A session's messages in the archive and the dead-letter queues: the prospect page's trace
--    and timelines, and `nexus trace`. Each lookup read the whole archive (0.2 s a session,
--    up to ten sessions a page). The work queue keeps no such index: every read of a message
--    rewrites its row, and 010 dropped the one it had for that cost; its backlog is scanned.
CREATE INDEX IF NOT EXISTS a_nexus_prospect_ingestion_group_idx
    ON pgmq.a_nexus_prospect_ingestion ((headers ->> 'x-pgmq-group'));
CREATE INDEX IF NOT EXISTS q_nexus_prospect_ingestion_dlq_group_idx
    ON pgmq.q_nexus_prospect_ingestion_dlq ((headers ->> 'x-pgmq-group'));
CREATE INDEX IF NOT EXISTS a_nexus_prospect_ingestion_dlq_group_idx
    ON pgmq.a_nexus_prospect_ingestion_dlq ((headers ->> 'x-pgmq-group'));

-- 3. Dead letters by the message they hold (`nexus trace MSG_ID`, and the throughput's look-up
--    of when a message traced in the last hour was dead-lettered before it) and by when they
--    were dead-lettered (the throughput's last hour). Each read every dead letter. Dead letters
--    are written seldom, so their indexes cost little.
CREATE INDEX IF NOT EXISTS q_nexus_prospect_ingestion_dlq_original_idx
    ON pgmq.q_nexus_prospect_ingestion_dlq ((message ->> 'originalMsgId'));
CREATE INDEX IF NOT EXISTS a_nexus_prospect_ingestion_dlq_original_idx
    ON pgmq.a_nexus_prospect_ingestion_dlq ((message ->> 'originalMsgId'));
CREATE INDEX IF NOT EXISTS q_nexus_prospect_ingestion_dlq_enqueued_idx
    ON pgmq.q_nexus_prospect_ingestion_dlq (enqueued_at);

-- 4. The prospects table by interest, with its tie-breakers, so the first page is read off an
--    index instead of sorting the tenth of the table that shares the top level (0.3 s). It
--    replaces 005's, its prefix. The sort by name and the search read the whole table (0.5 s
--    and 1.1 s a million prospects): an index for either (a trigram index for the search)
--    cost the no-op drain, which inserts a prospect row a message, 17% (docs/PERFORMANCE.md).
CREATE INDEX IF NOT EXISTS prospect_data_interest_order_idx
    ON public.prospect_data (nivel_interes DESC NULLS LAST, updated_at DESC, id DESC);
DROP INDEX IF EXISTS public.prospect_data_interest_idx;
