-- Retention: what the queue archives and the history tables keep grows with every snapshot.
-- One function deletes what has aged out; pg_cron runs it nightly where the server has pg_cron,
-- otherwise the workers run it (nexus_ingest.maintenance), one at a time.

CREATE OR REPLACE FUNCTION nexus.run_maintenance(
    p_archive_days integer DEFAULT 7,
    p_history_days integer DEFAULT 90,
    p_idempotency_hours integer DEFAULT 24
)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_archive_before timestamptz;
    v_history_before timestamptz;
    v_keys_before timestamptz;
    v_archive bigint;
    v_dlq_archive bigint;
    v_extractions bigint;
    v_keys bigint;
    v_sessions bigint;
    v_events bigint := 0;
BEGIN
    IF p_archive_days IS NULL OR p_archive_days < 0
       OR p_history_days IS NULL OR p_history_days < 0
       OR p_idempotency_hours IS NULL OR p_idempotency_hours < 0 THEN
        RAISE EXCEPTION 'retention periods must be zero or more, got % days, % days, % hours',
            p_archive_days, p_history_days, p_idempotency_hours
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_archive_before := pg_catalog.now() - pg_catalog.make_interval(days => p_archive_days);
    v_history_before := pg_catalog.now() - pg_catalog.make_interval(days => p_history_days);
    v_keys_before := pg_catalog.now() - pg_catalog.make_interval(hours => p_idempotency_hours);

    DELETE FROM pgmq.a_nexus_prospect_ingestion a WHERE a.archived_at < v_archive_before;
    GET DIAGNOSTICS v_archive = ROW_COUNT;

    DELETE FROM pgmq.a_nexus_prospect_ingestion_dlq a WHERE a.archived_at < v_archive_before;
    GET DIAGNOSTICS v_dlq_archive = ROW_COUNT;

    -- Only the history of extractions: the merged prospect rows are what sales people keep.
    DELETE FROM public.prospect_extractions e WHERE e.created_at < v_history_before;
    GET DIAGNOSTICS v_extractions = ROW_COUNT;

    DELETE FROM nexus.idempotency_keys k WHERE k.created_at < v_keys_before;
    GET DIAGNOSTICS v_keys = ROW_COUNT;

    -- The per-message event log arrives in a later migration (009); until then there is none.
    IF pg_catalog.to_regclass('nexus.message_events') IS NOT NULL THEN
        DELETE FROM nexus.message_events m WHERE m.at < v_history_before;
        GET DIAGNOSTICS v_events = ROW_COUNT;
    END IF;

    -- A session row holds its snapshot counter: dropping it while a snapshot of the session is
    -- queued, dead-lettered or leased would restart the numbering under that snapshot. Only
    -- sessions idle for the whole history period go. A producer touching the row meanwhile
    -- bumps updated_at, and the row is re-checked after its lock is released, so it stays.
    DELETE FROM nexus.sessions s
    WHERE s.updated_at < v_history_before
      AND (s.leased_until IS NULL OR s.leased_until <= pg_catalog.clock_timestamp())
      AND NOT EXISTS (
          SELECT 1 FROM pgmq.q_nexus_prospect_ingestion q
          WHERE COALESCE(q.headers ->> 'x-pgmq-group', '_default_fifo_group') = s.session_id)
      AND NOT EXISTS (
          SELECT 1 FROM pgmq.q_nexus_prospect_ingestion_dlq d
          WHERE d.headers ->> 'x-pgmq-group' = s.session_id);
    GET DIAGNOSTICS v_sessions = ROW_COUNT;

    RETURN pg_catalog.jsonb_build_object(
        'a_nexus_prospect_ingestion', v_archive,
        'a_nexus_prospect_ingestion_dlq', v_dlq_archive,
        'prospect_extractions', v_extractions,
        'idempotency_keys', v_keys,
        'message_events', v_events,
        'sessions', v_sessions);
END;
$$;

-- Whether pg_cron runs the maintenance in this database, so workers can leave it alone.
-- Without pg_cron (or without the right to read its jobs) the answer is no.
CREATE OR REPLACE FUNCTION nexus.maintenance_scheduled_by_cron()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RETURN false;
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM cron.job j
        WHERE j.jobname = 'nexus-maintenance'
          AND j.active
          AND j.database = pg_catalog.current_database());
EXCEPTION WHEN insufficient_privilege OR undefined_table OR undefined_column THEN
    RETURN false;
END;
$$;

REVOKE ALL ON FUNCTION nexus.run_maintenance(integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nexus.run_maintenance(integer, integer, integer) TO service_role;

-- Nightly at 03:17 (server time, UTC on Supabase), off the hour when everyone's jobs start.
-- Rescheduled on re-application; without pg_cron this block does nothing.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        IF EXISTS (SELECT 1 FROM cron.job WHERE jobname = 'nexus-maintenance') THEN
            PERFORM cron.unschedule('nexus-maintenance');
        END IF;
        PERFORM cron.schedule('nexus-maintenance', '17 3 * * *', 'SELECT nexus.run_maintenance()');
    END IF;
END
$$;
