-- Some migrations were changed after databases had applied them, and `nexus migrate` never
-- applies a recorded migration again: such a database kept the earlier text and went on without
-- what was added to it. This brings each one to what the current files give; on a database
-- that applied the current files it changes nothing.
--
-- 1. 005 gained `prospect_extractions.enqueued_at` and a longer `update_prospect_data`, and 004
--    a longer `nexus.enqueue_snapshot`. A database from before that had no column (every batch
--    save failed: the worker saved nothing), and kept the old functions beside the new ones, so
--    the seed's `SELECT update_prospect_data(...)` was ambiguous.
-- 2. 020 gained `nexus.new_traceparent`, with which `pgmq_send` starts a trace; a database that
--    applied 020 before that has neither (and a later `send_snapshot` calling it would fail).

ALTER TABLE public.prospect_extractions ADD COLUMN IF NOT EXISTS enqueued_at timestamptz;
DROP FUNCTION IF EXISTS public.update_prospect_data(
    text, text, jsonb, bigint, integer, text, text, integer, integer, integer, real);
DROP FUNCTION IF EXISTS nexus.enqueue_snapshot(text, text, text, jsonb, jsonb, text, text);

DO $catch_up$
BEGIN
    -- Each as in 020, to the character (a dump of the schema shows their text), and each only
    -- where it is missing: a `send_snapshot` with a trace, whichever migration wrote it, is kept.
    IF pg_catalog.to_regprocedure('nexus.new_traceparent()') IS NULL THEN
        EXECUTE $create$
CREATE OR REPLACE FUNCTION nexus.new_traceparent()
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = ''
AS $$
    SELECT '00-' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '') || '-'
        || pg_catalog.left(pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''), 16)
        || '-01'
$$
$create$;
        REVOKE ALL ON FUNCTION nexus.new_traceparent() FROM PUBLIC;
    END IF;

    IF pg_catalog.pg_get_functiondef('nexus.send_snapshot(jsonb, integer)'::pg_catalog.regprocedure)
        LIKE '%nexus.new_traceparent()%' THEN
        RETURN;
    END IF;
    -- Its grants, given in 011, stay.
    EXECUTE $create$
CREATE OR REPLACE FUNCTION nexus.send_snapshot(p_message jsonb, p_delay integer DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    v_problem text := nexus.snapshot_problem(p_message);
    v_receipt record;
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'pgmq_send: not a chat snapshot: %', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Post {"messages": [{"role": "user", "content": "..."}], "fingerprint": "...", "sessionId": "..."}.';
    END IF;
    SELECT e.msg_id, e.session_taken INTO v_receipt
    FROM nexus.enqueue_snapshot(
        'nexus_prospect_ingestion', p_message ->> 'sessionId', p_message ->> 'fingerprint',
        p_message,
        pg_catalog.jsonb_build_object(
            'x-pgmq-group', p_message ->> 'sessionId', 'traceparent', nexus.new_traceparent()),
        p_delay_ms => GREATEST(COALESCE(p_delay, 0), 0) * 1000) AS e;
    IF v_receipt.session_taken THEN
        RAISE EXCEPTION 'pgmq_send: sessionId: already in use under another fingerprint'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give every chat a sessionId of its own.';
    END IF;
    RETURN v_receipt.msg_id;
END;
$$
$create$;
END
$catch_up$;
