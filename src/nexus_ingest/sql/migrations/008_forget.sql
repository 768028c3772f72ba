-- The right to be forgotten: erase everything Nexus holds about one visitor, wherever it is
-- (prospect row, extraction history, sessions, queued, archived and dead-lettered messages).
CREATE OR REPLACE FUNCTION nexus.forget_prospect(p_fingerprint_id text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_counts jsonb := '{}';
    v_n bigint;
BEGIN
    DELETE FROM public.prospect_data WHERE fingerprint_id = p_fingerprint_id;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_counts := v_counts || jsonb_build_object('prospect_data', v_n);
    DELETE FROM public.prospect_extractions WHERE fingerprint_id = p_fingerprint_id;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_counts := v_counts || jsonb_build_object('prospect_extractions', v_n);
    DELETE FROM pgmq.q_nexus_prospect_ingestion WHERE message ->> 'fingerprint' = p_fingerprint_id;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_counts := v_counts || jsonb_build_object('queued', v_n);
    DELETE FROM pgmq.a_nexus_prospect_ingestion WHERE message ->> 'fingerprint' = p_fingerprint_id;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_counts := v_counts || jsonb_build_object('archived', v_n);
    DELETE FROM pgmq.q_nexus_prospect_ingestion_dlq WHERE message -> 'original' ->> 'fingerprint' = p_fingerprint_id;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_counts := v_counts || jsonb_build_object('dead_letters', v_n);
    DELETE FROM pgmq.a_nexus_prospect_ingestion_dlq WHERE message -> 'original' ->> 'fingerprint' = p_fingerprint_id;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_counts := v_counts || jsonb_build_object('archived_dead_letters', v_n);
    DELETE FROM nexus.sessions WHERE fingerprint_id = p_fingerprint_id;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_counts := v_counts || jsonb_build_object('sessions', v_n);
    RETURN v_counts;
END;
$$;
