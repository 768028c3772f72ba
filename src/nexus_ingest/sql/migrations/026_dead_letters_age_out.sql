-- Retention of the dead letters themselves. 007 trimmed the two archives, but a dead letter
-- nobody replayed or purged stayed in the dead-letter queue for ever: a steady trickle of
-- poison grew the table (conversation text and contact details included) without bound, and
-- kept its session's row from ever aging out. A dead letter now goes once it is older than a
-- period of its own (NEXUS_RETENTION_DEAD_LETTER_DAYS, 30 days by default), counted from when
-- it was dead-lettered: longer than the archive's week, since a dead letter is work nobody has
-- looked at yet, and a holiday should not cost it. The sessions it held go later, by the
-- sessions' own rule. Otherwise the same function as 007, with one more parameter, so the old
-- signature goes first (CREATE OR REPLACE would add an overload beside it).

DROP FUNCTION nexus.run_maintenance(integer, integer, integer);

CREATE FUNCTION nexus.run_maintenance(
    p_archive_days integer DEFAULT 7,
    p_history_days integer DEFAULT 90,
    p_idempotency_hours integer DEFAULT 24,
    p_dead_letter_days integer DEFAULT 30
)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_archive_before timestamptz;
    v_dead_before timestamptz;
    v_history_before timestamptz;
    v_keys_before timestamptz;
    v_archive bigint;
    v_dead bigint;
    v_dlq_archive bigint;
    v_extractions bigint;
    v_keys bigint;
    v_sessions bigint;
    v_events bigint;
BEGIN
    IF p_archive_days IS NULL OR p_archive_days < 0
       OR p_dead_letter_days IS NULL OR p_dead_letter_days < 0
       OR p_history_days IS NULL OR p_history_days < 0
       OR p_idempotency_hours IS NULL OR p_idempotency_hours < 0 THEN
        RAISE EXCEPTION 'retention periods must be zero or more, got % days, % days, % hours, % days',
            p_archive_days, p_history_days, p_idempotency_hours, p_dead_letter_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_archive_before := pg_catalog.now() - pg_catalog.make_interval(days => p_archive_days);
    v_history_before := pg_catalog.now() - pg_catalog.make_interval(days => p_history_days);
    v_dead_before := pg_catalog.now() - pg_catalog.make_interval(days => p_dead_letter_days);
    v_keys_before := pg_catalog.now() - pg_catalog.make_interval(hours => p_idempotency_hours);

    DELETE FROM pgmq.a_nexus_prospect_ingestion a WHERE a.archived_at < v_archive_before;
    GET DIAGNOSTICS v_archive = ROW_COUNT;

    -- A dead letter is sent to its queue when the message dies: enqueued_at is that moment.
    DELETE FROM pgmq.q_nexus_prospect_ingestion_dlq d WHERE d.enqueued_at < v_dead_before;
    GET DIAGNOSTICS v_dead = ROW_COUNT;

    DELETE FROM pgmq.a_nexus_prospect_ingestion_dlq a WHERE a.archived_at < v_archive_before;
    GET DIAGNOSTICS v_dlq_archive = ROW_COUNT;

    -- Only the history of extractions: the merged prospect rows are what sales people keep.
    DELETE FROM public.prospect_extractions e WHERE e.created_at < v_history_before;
    GET DIAGNOSTICS v_extractions = ROW_COUNT;

    DELETE FROM nexus.idempotency_keys k WHERE k.created_at < v_keys_before;
    GET DIAGNOSTICS v_keys = ROW_COUNT;

    DELETE FROM nexus.message_events m WHERE m.at < v_history_before;
    GET DIAGNOSTICS v_events = ROW_COUNT;

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
        'q_nexus_prospect_ingestion_dlq', v_dead,
        'a_nexus_prospect_ingestion_dlq', v_dlq_archive,
        'prospect_extractions', v_extractions,
        'idempotency_keys', v_keys,
        'message_events', v_events,
        'sessions', v_sessions);
END;
$$;

REVOKE ALL ON FUNCTION nexus.run_maintenance(integer, integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nexus.run_maintenance(integer, integer, integer, integer) TO service_role;
