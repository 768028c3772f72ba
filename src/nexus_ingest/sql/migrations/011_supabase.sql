-- Nexus on Supabase as it is: on every pgmq from 1.5 up (Supabase offers 1.4.4, which
-- `prepare_pgmq` updates, and 1.5.1), and with a public enqueue path that the anon key cannot
-- misuse.

-- 1. What pgmq before 1.10 lacks, made up for where this database's pgmq lacks it.
--
-- Insert notifications (pgmq 1.7+): workers LISTEN on pgmq's channel `pgmq.q_<queue>.INSERT`
-- (see 002). Where pgmq cannot notify, this trigger does, on the same channel, so workers are
-- the same on every pgmq. It notifies once per insert statement, at most once per 100 ms per
-- database session: like pgmq's own throttle, but without a shared row that every producer
-- would update and hold locked until it commits.
CREATE OR REPLACE FUNCTION nexus.notify_queue_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_now double precision := EXTRACT(epoch FROM pg_catalog.clock_timestamp());
    v_last text := pg_catalog.current_setting('nexus.queue_notified_at', true);
BEGIN
    IF v_last IS NULL OR v_last = '' OR v_now - v_last::double precision >= 0.1 THEN
        PERFORM pg_catalog.pg_notify('pgmq.' || TG_TABLE_NAME || '.INSERT', NULL);
        -- Session-wide, and undone with the transaction, like the notification itself.
        PERFORM pg_catalog.set_config('nexus.queue_notified_at', v_now::text, false);
    END IF;
    RETURN NULL;
END;
$$;

-- Brings what earlier migrations defined in line with the pgmq installed now: the column
-- `last_read_at` (pgmq 1.10+) is set by reads only where queue tables have it, and without
-- pgmq's insert notifications the trigger above notifies. Safe to call again; a later
-- migration that redefines `nexus.read_snapshots` calls it afterwards.
CREATE OR REPLACE FUNCTION nexus.fit_to_pgmq()
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_read regprocedure := 'nexus.read_snapshots(text, integer, integer, uuid)'::regprocedure;
    v_mark_read constant text := ', last_read_at = clock_timestamp()';
    v_definition text;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = 'pgmq.q_nexus_prospect_ingestion'::regclass
          AND a.attname = 'last_read_at' AND NOT a.attisdropped) THEN
        v_definition := pg_catalog.pg_get_functiondef(v_read);
        IF pg_catalog.strpos(v_definition, v_mark_read) > 0 THEN
            EXECUTE pg_catalog.replace(v_definition, v_mark_read, '');
        END IF;
    END IF;

    IF pg_catalog.to_regprocedure('pgmq.enable_notify_insert(text, integer)') IS NULL THEN
        DROP TRIGGER IF EXISTS nexus_notify_insert ON pgmq.q_nexus_prospect_ingestion;
        CREATE TRIGGER nexus_notify_insert
            AFTER INSERT ON pgmq.q_nexus_prospect_ingestion
            FOR EACH STATEMENT EXECUTE FUNCTION nexus.notify_queue_insert();
    END IF;
END;
$$;

SELECT nexus.fit_to_pgmq();

-- 2. The public enqueue path. `pgmq_send` is granted to anon and authenticated (the seed's
-- browser producer), so with Supabase's public anon key anyone may call it. It now runs as its
-- caller; the ingestion queue is reached only through `nexus.send_snapshot`, which checks that
-- the body is a chat snapshot within the producer's limits and numbers it in its session as the
-- producer does. Other queues (the dead-letter queue included) stay with service_role and the
-- owner.

-- Why a snapshot is refused, or NULL when it is acceptable. The limits are the producer's
-- defaults (nexus_ingest.settings: max_body_bytes, max_messages, max_content_chars,
-- max_id_chars) and its checks (nexus_ingest.models.SnapshotIn, nexus_ingest.limits).
CREATE OR REPLACE FUNCTION nexus.snapshot_problem(p_body jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = ''
AS $$
DECLARE
    c_max_bytes constant integer := 262144;
    c_max_messages constant integer := 200;
    c_max_content constant integer := 8000;
    c_max_id constant integer := 200;
    c_control constant text := '[\u0001-\u0008\u000b\u000c\u000e-\u001f\u007f]';
    v_key text;
    v_value jsonb;
    v_turn jsonb;
    v_index integer;
BEGIN
    IF p_body IS NULL OR pg_catalog.jsonb_typeof(p_body) <> 'object' THEN
        RETURN 'the message must be a JSON object: {"messages": [...], "fingerprint": "...", "sessionId": "..."}';
    END IF;
    IF pg_catalog.octet_length(p_body::text) > c_max_bytes THEN
        RETURN pg_catalog.format('the message is larger than %s bytes', c_max_bytes);
    END IF;
    FOR v_key IN SELECT k FROM pg_catalog.jsonb_object_keys(p_body) AS k LOOP
        IF v_key NOT IN ('messages', 'fingerprint', 'sessionId', 'metadata') THEN
            RETURN pg_catalog.format('%s: unknown field', v_key);
        END IF;
    END LOOP;
    FOREACH v_key IN ARRAY ARRAY['fingerprint', 'sessionId'] LOOP
        v_value := p_body -> v_key;
        IF v_value IS NULL OR pg_catalog.jsonb_typeof(v_value) <> 'string' THEN
            RETURN pg_catalog.format('%s: required, a string', v_key);
        ELSIF (v_value #>> '{}') !~ '\S' THEN
            RETURN pg_catalog.format('%s: must not be blank', v_key);
        ELSIF pg_catalog.length(v_value #>> '{}') > c_max_id THEN
            RETURN pg_catalog.format('%s: at most %s characters', v_key, c_max_id);
        ELSIF (v_value #>> '{}') ~ c_control OR (v_value #>> '{}') ~ '^\s|\s$' THEN
            RETURN pg_catalog.format('%s: no control characters or surrounding spaces', v_key);
        END IF;
    END LOOP;
    v_value := p_body -> 'messages';
    IF v_value IS NULL OR pg_catalog.jsonb_typeof(v_value) <> 'array' OR pg_catalog.jsonb_array_length(v_value) = 0 THEN
        RETURN 'messages: required, a non-empty list of {"role", "content"}';
    ELSIF pg_catalog.jsonb_array_length(v_value) > c_max_messages THEN
        RETURN pg_catalog.format('messages: at most %s messages', c_max_messages);
    END IF;
    FOR v_turn, v_index IN SELECT t.value, (t.ord - 1)::integer FROM pg_catalog.jsonb_array_elements(v_value) WITH ORDINALITY AS t(value, ord) LOOP
        IF pg_catalog.jsonb_typeof(v_turn) <> 'object'
           OR (SELECT pg_catalog.array_agg(k ORDER BY k) FROM pg_catalog.jsonb_object_keys(v_turn) AS k)
                  IS DISTINCT FROM ARRAY['content', 'role'] THEN
            RETURN pg_catalog.format('messages[%s]: must be {"role": ..., "content": ...}', v_index);
        ELSIF (v_turn ->> 'role') IS NULL OR (v_turn ->> 'role') NOT IN ('user', 'assistant', 'system')
              OR pg_catalog.jsonb_typeof(v_turn -> 'role') <> 'string' THEN
            RETURN pg_catalog.format('messages[%s].role: one of user, assistant, system', v_index);
        ELSIF pg_catalog.jsonb_typeof(v_turn -> 'content') <> 'string' OR (v_turn ->> 'content') !~ '\S' THEN
            RETURN pg_catalog.format('messages[%s].content: must be a non-empty string', v_index);
        ELSIF pg_catalog.length(v_turn ->> 'content') > c_max_content THEN
            RETURN pg_catalog.format('messages[%s].content: at most %s characters', v_index, c_max_content);
        ELSIF (v_turn ->> 'content') ~ c_control THEN
            RETURN pg_catalog.format('messages[%s].content: control characters are not allowed', v_index);
        END IF;
    END LOOP;
    v_value := p_body -> 'metadata';
    IF v_value IS NOT NULL AND pg_catalog.jsonb_typeof(v_value) NOT IN ('object', 'null') THEN
        RETURN 'metadata: must be an object';
    ELSIF v_value IS NOT NULL AND pg_catalog.jsonb_path_exists(v_value, 'strict $.**{9 to last}') THEN
        RETURN 'metadata: nested deeper than 8 levels';
    END IF;
    RETURN NULL;
END;
$$;

-- One snapshot onto the ingestion queue, numbered within its session like the producer's.
CREATE OR REPLACE FUNCTION nexus.send_snapshot(p_message jsonb, p_delay integer DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    v_problem text := nexus.snapshot_problem(p_message);
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'pgmq_send: not a chat snapshot: %', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Post {"messages": [{"role": "user", "content": "..."}], "fingerprint": "...", "sessionId": "..."}.';
    END IF;
    RETURN (
        SELECT e.msg_id
        FROM nexus.enqueue_snapshot(
            'nexus_prospect_ingestion', p_message ->> 'sessionId', p_message ->> 'fingerprint',
            p_message, pg_catalog.jsonb_build_object('x-pgmq-group', p_message ->> 'sessionId'),
            p_delay_ms => GREATEST(COALESCE(p_delay, 0), 0) * 1000) AS e);
END;
$$;

-- Any queue, as the seed's wrapper always allowed; only for service_role and the owner.
CREATE OR REPLACE FUNCTION nexus.send_message(p_queue text, p_message jsonb, p_delay integer DEFAULT 0)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = ''
AS $$ SELECT pgmq.send(nexus.stored_queue_name(p_queue), p_message, COALESCE(p_delay, 0)) $$;

-- Same signature as in 003, so grants (and the seed's troubleshooting check) still apply.
CREATE OR REPLACE FUNCTION public.pgmq_send(queue_name text, message jsonb, delay integer DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = ''
AS $$
BEGIN
    IF nexus.stored_queue_name(queue_name) = 'nexus_prospect_ingestion' THEN
        RETURN nexus.send_snapshot(message, delay);
    END IF;
    IF NOT pg_catalog.has_function_privilege('nexus.send_message(text, jsonb, integer)', 'EXECUTE') THEN
        RAISE EXCEPTION 'pgmq_send: % may only send to nexus-prospect-ingestion, not to %', current_user, queue_name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN nexus.send_message(queue_name, message, delay);
END;
$$;

-- `pgmq_send`, running as its caller, needs schema nexus (and two functions in it) usable by
-- anon and authenticated. Functions are executable by PUBLIC unless revoked: none of Nexus's is,
-- but for those granted by name. (A SECURITY DEFINER function added to nexus later must be
-- revoked from PUBLIC too; tests/integration/test_supabase_roles.py checks.)
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA nexus FROM PUBLIC;
GRANT USAGE ON SCHEMA nexus TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION nexus.stored_queue_name(text) TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION nexus.send_snapshot(jsonb, integer) TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION nexus.send_message(text, jsonb, integer) TO service_role;
GRANT EXECUTE ON FUNCTION nexus.run_maintenance(integer, integer, integer) TO service_role;

-- On Supabase, default privileges grant every function, table and sequence created in public
-- to anon and authenticated by name, which `REVOKE ... FROM PUBLIC` (003, 005) does not undo:
-- the seed's reading wrappers and the merge function were open to the anon key there.
REVOKE ALL ON FUNCTION public.pgmq_read(text, integer, integer) FROM anon, authenticated;
REVOKE ALL ON FUNCTION public.pgmq_delete(text, bigint) FROM anon, authenticated;
REVOKE ALL ON FUNCTION public.pgmq_archive(text, bigint) FROM anon, authenticated;
REVOKE ALL ON FUNCTION public.pgmq_metrics(text) FROM anon, authenticated;
REVOKE ALL ON FUNCTION public.update_prospect_data(
    text, text, jsonb, bigint, integer, text, text, integer, integer, integer, real, timestamptz)
    FROM anon, authenticated;
REVOKE ALL ON SEQUENCE public.prospect_data_id_seq, public.prospect_extractions_id_seq
    FROM anon, authenticated;

-- 3. The queue tables hold conversations. Supabase creates queues with row-level security on,
-- so that a grant made later (Queues page, "Expose Queues via PostgREST") exposes nothing by
-- itself; Nexus's queues get the same. Their owner (the role that migrated, which the worker
-- connects as) and service_role bypass it.
DO $$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY[
        'q_nexus_prospect_ingestion', 'a_nexus_prospect_ingestion',
        'q_nexus_prospect_ingestion_dlq', 'a_nexus_prospect_ingestion_dlq'] LOOP
        EXECUTE pg_catalog.format('ALTER TABLE pgmq.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE pg_catalog.format('REVOKE ALL ON pgmq.%I FROM anon, authenticated', v_table);
    END LOOP;
END
$$;
