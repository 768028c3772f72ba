-- The work queue and its dead-letter queue. PGMQ stores `nexus-prospect-ingestion` as
-- `nexus_prospect_ingestion` (its table names cannot hold dashes), so the seed's
-- `SELECT * FROM pgmq.q_nexus_prospect_ingestion` works as written.
SELECT pgmq.create('nexus_prospect_ingestion');
SELECT pgmq.create('nexus_prospect_ingestion_dlq');

-- Grouped FIFO reads group by this expression; a btree on it lets the planner find each
-- session's head without scanning the whole queue.
CREATE INDEX IF NOT EXISTS q_nexus_prospect_ingestion_group_idx
    ON pgmq.q_nexus_prospect_ingestion
    ((COALESCE(headers ->> 'x-pgmq-group', '_default_fifo_group')), msg_id);

-- Workers LISTEN on pgmq's insert channel so a snapshot is picked up at once instead of on
-- the next poll. Unthrottled, every insert updates one shared throttle row and holds its lock
-- through commit, which serialises all producers (measured: ~550 sends/s instead of ~2,700).
-- With 100 ms, at most ten notifications a second; workers poll briefly after each wake-up
-- so the inserts that the throttle stays silent about are still picked up at once.
-- PGMQ notifies since 1.7; on older pgmq (Supabase's 1.4.4 and 1.5.1) migration 011 adds
-- Nexus's own notification on the same channel.
DO $$
BEGIN
    IF pg_catalog.to_regprocedure('pgmq.enable_notify_insert(text, integer)') IS NOT NULL THEN
        PERFORM pgmq.enable_notify_insert('nexus_prospect_ingestion', 100);
    END IF;
END
$$;
