-- A session belongs to one visitor, and what a visitor leaves behind goes with them.
--
-- 1. A sessionId is numbered under the fingerprint that first used it. The same sessionId posted
--    under another fingerprint was accepted (202) and numbered in the first visitor's session,
--    so one visitor's snapshot superseded the other's, or came out "stale" behind it, and was
--    never saved; forgetting either visitor deleted the shared session and the other's
--    numbering started again at 1. Such a snapshot is now refused, and nothing is queued for
--    it: `session_taken` in the receipt (the producer's 422), an error on the anon path.
-- 2. With NEXUS_ARCHIVE_PROCESSED, a forgotten visitor's snapshots (those sent after
--    `nexus forget`, superseded or not) were archived with their text; they are deleted.
-- 3. `nexus forget` erases the message events (`nexus trace`) of the visitor's sessions.
-- 4. `update_prospect_data` without a fingerprint or a session raises instead of saving nothing.
-- 5. A snapshot sent with `pgmq_send` (the anon key) starts a trace, as a POST does.

DROP FUNCTION IF EXISTS nexus.enqueue_snapshot(text, text, text, jsonb, jsonb, text, text, integer);
DROP FUNCTION IF EXISTS nexus.enqueue_snapshots(text, jsonb);

CREATE FUNCTION nexus.enqueue_snapshots(p_queue text, p_items jsonb)
RETURNS TABLE (
    idx integer,
    msg_id bigint,
    seq integer,
    duplicate boolean,
    conflict boolean,
    session_taken boolean
)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_ingestion constant boolean := nexus.stored_queue_name(p_queue) = 'nexus_prospect_ingestion';
    v_idx integer;
    v_item jsonb;
    v_session text;
    v_fingerprint text;
    v_key text;
    v_hash text;
    v_message jsonb;
    v_visible_at timestamptz;
    v_seq integer;
    v_msg_id bigint;
    v_prior nexus.idempotency_keys%ROWTYPE;
BEGIN
    -- Session by session, arrival order kept within a session, so concurrent batches lock
    -- session rows in the same order.
    FOR v_idx, v_item IN
        SELECT (t.ord - 1)::integer, t.value
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(value, ord)
        ORDER BY t.value ->> 'session_id', t.ord
    LOOP
        v_session := v_item ->> 'session_id';
        v_fingerprint := v_item ->> 'fingerprint_id';
        v_key := v_item ->> 'idempotency_key';
        v_hash := v_item ->> 'request_hash';
        v_seq := NULL;

        IF v_key IS NOT NULL THEN
            -- A concurrent request with the same key blocks here until the first one commits.
            INSERT INTO nexus.idempotency_keys (session_id, fingerprint_id, key, request_hash)
            VALUES (v_session, v_fingerprint, v_key, v_hash)
            ON CONFLICT (session_id, fingerprint_id, key) DO NOTHING;
            IF NOT FOUND THEN
                SELECT * INTO v_prior FROM nexus.idempotency_keys k
                WHERE k.session_id = v_session AND k.fingerprint_id = v_fingerprint
                  AND k.key = v_key;
                idx := v_idx;
                msg_id := v_prior.msg_id;
                seq := v_prior.seq;
                duplicate := true;
                conflict := v_prior.request_hash IS DISTINCT FROM v_hash;
                session_taken := false;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;

        -- A forgotten visitor's snapshot is queued (the chat gets its usual answer) but
        -- numbered in no session: the worker drops it instead of saving it.
        IF NOT EXISTS (SELECT 1 FROM nexus.forgotten f WHERE f.fingerprint_id = v_fingerprint) THEN
            INSERT INTO nexus.sessions AS s (session_id, fingerprint_id, last_seq)
            VALUES (v_session, v_fingerprint, 1)
            ON CONFLICT (session_id) DO UPDATE
                SET last_seq = s.last_seq + 1, updated_at = now()
                WHERE s.fingerprint_id = EXCLUDED.fingerprint_id
            RETURNING s.last_seq INTO v_seq;
            IF NOT FOUND THEN
                -- Another visitor's session: refused, and its key released for a retry
                -- under a sessionId of its own.
                IF v_key IS NOT NULL THEN
                    DELETE FROM nexus.idempotency_keys k
                    WHERE k.session_id = v_session AND k.fingerprint_id = v_fingerprint
                      AND k.key = v_key;
                END IF;
                idx := v_idx;
                msg_id := NULL;
                seq := NULL;
                duplicate := false;
                conflict := false;
                session_taken := true;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;

        v_message := (v_item -> 'message')
            || jsonb_build_object('seq', v_seq, 'receivedAt', clock_timestamp());
        v_visible_at := clock_timestamp()
            + make_interval(secs => COALESCE((v_item ->> 'delay_ms')::integer, 0) / 1000.0);
        IF v_ingestion THEN
            INSERT INTO pgmq.q_nexus_prospect_ingestion AS m (vt, message, headers)
            VALUES (v_visible_at, v_message, v_item -> 'headers')
            RETURNING m.msg_id INTO v_msg_id;
        ELSE
            SELECT pgmq.send(nexus.stored_queue_name(p_queue), v_message, v_item -> 'headers',
                             v_visible_at)
            INTO v_msg_id;
        END IF;

        IF v_key IS NOT NULL THEN
            UPDATE nexus.idempotency_keys k SET msg_id = v_msg_id, seq = v_seq
            WHERE k.session_id = v_session AND k.fingerprint_id = v_fingerprint
              AND k.key = v_key;
        END IF;

        idx := v_idx;
        msg_id := v_msg_id;
        seq := v_seq;
        duplicate := false;
        conflict := false;
        session_taken := false;
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE ALL ON FUNCTION nexus.enqueue_snapshots(text, jsonb) FROM PUBLIC;

-- One snapshot, as a batch of one (the anon path's, 011).
CREATE FUNCTION nexus.enqueue_snapshot(
    p_queue text,
    p_session_id text,
    p_fingerprint_id text,
    p_message jsonb,
    p_headers jsonb,
    p_idempotency_key text DEFAULT NULL,
    p_request_hash text DEFAULT NULL,
    p_delay_ms integer DEFAULT 0
)
RETURNS TABLE (
    msg_id bigint, seq integer, duplicate boolean, conflict boolean, session_taken boolean)
LANGUAGE sql
SET search_path = ''
AS $$
    SELECT e.msg_id, e.seq, e.duplicate, e.conflict, e.session_taken
    FROM nexus.enqueue_snapshots(p_queue, pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'session_id', p_session_id, 'fingerprint_id', p_fingerprint_id, 'message', p_message,
        'headers', p_headers, 'idempotency_key', p_idempotency_key,
        'request_hash', p_request_hash, 'delay_ms', p_delay_ms))) AS e
$$;
REVOKE ALL ON FUNCTION nexus.enqueue_snapshot(
    text, text, text, jsonb, jsonb, text, text, integer) FROM PUBLIC;

-- A new W3C trace (version 00, sampled), as the producer starts one for a POST without its
-- own: every log line about a message carries its trace id, whichever way it was queued.
CREATE FUNCTION nexus.new_traceparent()
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = ''
AS $$
    SELECT '00-' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '') || '-'
        || pg_catalog.left(pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''), 16)
        || '-01'
$$;
REVOKE ALL ON FUNCTION nexus.new_traceparent() FROM PUBLIC;

-- As in 011, refusing another visitor's session as the producer does, and with a trace.
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
$$;

-- Handled messages kept in the archive (NEXUS_ARCHIVE_PROCESSED), but for a forgotten
-- visitor's: those are deleted. The lock orders this against `nexus.forget_prospect`, which
-- empties the archive of the visitor after marking them forgotten.
CREATE FUNCTION nexus.archive_messages(p_queue text, p_msg_ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    PERFORM nexus.ingestion_queue_only(p_queue);
    LOCK TABLE nexus.forgotten IN ROW SHARE MODE;
    DELETE FROM pgmq.q_nexus_prospect_ingestion q
    WHERE q.msg_id = ANY (p_msg_ids)
      AND EXISTS (
          SELECT 1 FROM nexus.forgotten f WHERE f.fingerprint_id = q.message ->> 'fingerprint');
    PERFORM pgmq.archive('nexus_prospect_ingestion', p_msg_ids);
END;
$$;
REVOKE ALL ON FUNCTION nexus.archive_messages(text, bigint[]) FROM PUBLIC;

-- As in 019, archiving through `nexus.archive_messages`.
CREATE OR REPLACE FUNCTION nexus.save_extractions(
    p_queue text, p_items jsonb, p_archive boolean DEFAULT false)
RETURNS TABLE (msg_id bigint, outcome text)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_mixed boolean;
    v_round jsonb;
    v_msg_ids bigint[];
    v_outcomes text[];
BEGIN
    PERFORM nexus.ingestion_queue_only(p_queue);
    LOCK TABLE nexus.forgotten IN ROW SHARE MODE;

    SELECT array_agg(m.msg_id), array_agg(m.outcome)
    INTO v_msg_ids, v_outcomes
    FROM nexus.merge_extractions(p_items) m;

    IF v_msg_ids IS NULL AND jsonb_array_length(p_items) > 0 THEN
        -- Several extractions of one visitor: merge them in rounds, in arrival order, as one
        -- call each would. A session posted under two visitors (queued before 020) is merged
        -- one extraction at a time.
        SELECT count(DISTINCT (e ->> 'session_id', e ->> 'fingerprint_id'))
               <> count(DISTINCT e ->> 'session_id')
        INTO v_mixed
        FROM jsonb_array_elements(p_items) AS e;
        FOR v_round IN
            SELECT jsonb_agg(r.item ORDER BY r.msg_id)
            FROM (
                SELECT e.item, (e.item ->> 'msg_id')::bigint AS msg_id,
                       row_number() OVER (
                           PARTITION BY CASE WHEN v_mixed THEN '' ELSE e.item ->> 'fingerprint_id' END
                           ORDER BY (e.item ->> 'msg_id')::bigint) AS round
                FROM jsonb_array_elements(p_items) AS e(item)
            ) r
            GROUP BY r.round
            ORDER BY r.round
        LOOP
            SELECT v_msg_ids || array_agg(m.msg_id), v_outcomes || array_agg(m.outcome)
            INTO v_msg_ids, v_outcomes
            FROM nexus.merge_extractions(v_round) m;
        END LOOP;
    END IF;

    IF p_archive THEN
        PERFORM nexus.archive_messages(p_queue, v_msg_ids);
    ELSE
        DELETE FROM pgmq.q_nexus_prospect_ingestion q WHERE q.msg_id = ANY (v_msg_ids);
    END IF;
    RETURN QUERY SELECT * FROM unnest(v_msg_ids, v_outcomes);
END;
$$;

-- As in 012, erasing the message events of the visitor's sessions too: every session the
-- visitor's rows and messages name, looked up before any of them is deleted.
CREATE OR REPLACE FUNCTION nexus.forget_prospect(p_fingerprint_id text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_counts jsonb := '{}';
    v_n bigint;
    v_sessions text[];
BEGIN
    LOCK TABLE nexus.forgotten IN EXCLUSIVE MODE;
    INSERT INTO nexus.forgotten (fingerprint_id) VALUES (p_fingerprint_id)
    ON CONFLICT (fingerprint_id) DO UPDATE SET forgotten_at = now();
    SELECT array_agg(DISTINCT v.session_id) INTO v_sessions
    FROM (
        SELECT s.session_id FROM nexus.sessions s WHERE s.fingerprint_id = p_fingerprint_id
        UNION ALL
        SELECT e.session_id FROM public.prospect_extractions e
        WHERE e.fingerprint_id = p_fingerprint_id
        UNION ALL
        SELECT q.message ->> 'sessionId' FROM pgmq.q_nexus_prospect_ingestion q
        WHERE q.message ->> 'fingerprint' = p_fingerprint_id
        UNION ALL
        SELECT a.message ->> 'sessionId' FROM pgmq.a_nexus_prospect_ingestion a
        WHERE a.message ->> 'fingerprint' = p_fingerprint_id
        UNION ALL
        SELECT d.message -> 'original' ->> 'sessionId' FROM pgmq.q_nexus_prospect_ingestion_dlq d
        WHERE d.message -> 'original' ->> 'fingerprint' = p_fingerprint_id
    ) v
    WHERE v.session_id IS NOT NULL;
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
    DELETE FROM nexus.message_events WHERE session_id = ANY (v_sessions);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_counts := v_counts || jsonb_build_object('message_events', v_n);
    DELETE FROM nexus.sessions WHERE fingerprint_id = p_fingerprint_id;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_counts := v_counts || jsonb_build_object('sessions', v_n);
    DELETE FROM nexus.idempotency_keys WHERE fingerprint_id = p_fingerprint_id;
    RETURN v_counts;
END;
$$;

-- As in 013, refusing a merge without its visitor or session (it saved nothing, silently).
CREATE OR REPLACE FUNCTION public.update_prospect_data(
    p_fingerprint_id text,
    p_session_id text,
    p_data jsonb,
    p_msg_id bigint DEFAULT NULL,
    p_seq integer DEFAULT NULL,
    p_extractor text DEFAULT NULL,
    p_model text DEFAULT NULL,
    p_input_tokens integer DEFAULT 0,
    p_output_tokens integer DEFAULT 0,
    p_cached_tokens integer DEFAULT 0,
    p_latency_ms real DEFAULT NULL,
    p_enqueued_at timestamptz DEFAULT NULL,
    p_cache_write_tokens integer DEFAULT 0,
    p_batch boolean DEFAULT false,
    p_cost_usd numeric DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    IF p_fingerprint_id IS NULL OR p_session_id IS NULL THEN
        RAISE EXCEPTION 'update_prospect_data: % must not be null',
            CASE WHEN p_fingerprint_id IS NULL THEN 'p_fingerprint_id' ELSE 'p_session_id' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN (
        SELECT m.outcome
        FROM nexus.merge_extractions(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'msg_id', p_msg_id, 'fingerprint_id', p_fingerprint_id, 'session_id', p_session_id,
            'seq', p_seq, 'data', p_data, 'extractor', p_extractor, 'model', p_model,
            'input_tokens', p_input_tokens, 'output_tokens', p_output_tokens,
            'cached_tokens', p_cached_tokens, 'latency_ms', p_latency_ms,
            'enqueued_at', p_enqueued_at, 'cache_write_tokens', p_cache_write_tokens,
            'batch', p_batch, 'cost_usd', p_cost_usd))) AS m
    );
END;
$$;
