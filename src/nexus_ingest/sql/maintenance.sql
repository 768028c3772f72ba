-- Retention of archives and history (see migrations/007_maintenance.sql). Loaded by name.

-- name: run_maintenance
SELECT nexus.run_maintenance(
    p_archive_days => %(archive_days)s::integer,
    p_history_days => %(history_days)s::integer,
    p_dead_letter_days => %(dead_letter_days)s::integer);

-- name: try_maintenance_lock
-- Held until the transaction ends, so a crashed run can never leave it taken.
SELECT pg_try_advisory_xact_lock(%(key)s::bigint);

-- name: maintenance_scheduled_by_cron
SELECT nexus.maintenance_scheduled_by_cron();

-- name: tables_autovacuum_skips
-- The tables Nexus deletes from or updates at the pace of the chats, where autovacuum will not
-- run: all of them when it is off for the server (or cannot start: without track_counts it
-- sees no dead rows), else those whose storage options turn it off. Left unvacuumed, the
-- queue's deleted rows stay on disk and every read steps over them.
SELECT t.relid::regclass::text AS table_name,
       COALESCE(s.n_dead_tup, 0) AS dead_tuples
FROM unnest(ARRAY[
        to_regclass('pgmq.q_nexus_prospect_ingestion'),
        to_regclass('nexus.sessions'),
        to_regclass('public.prospect_data'),
        to_regclass('public.prospect_extractions'),
        to_regclass('nexus.message_events'),
        to_regclass('nexus.idempotency_keys')]) AS t(relid)
JOIN pg_catalog.pg_class c ON c.oid = t.relid
LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = t.relid
WHERE NOT current_setting('autovacuum')::boolean
   OR NOT current_setting('track_counts')::boolean
   OR EXISTS (
        SELECT 1 FROM pg_catalog.pg_options_to_table(c.reloptions) o
        WHERE o.option_name = 'autovacuum_enabled' AND NOT o.option_value::boolean)
ORDER BY 1;
