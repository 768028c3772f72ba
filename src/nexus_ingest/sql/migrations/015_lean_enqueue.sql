-- The producer's write, made cheaper per snapshot. At 500 requests a second most of its batches
-- hold one to four snapshots, so what each snapshot costs inside Postgres is what a request
-- waits for, and what Postgres takes from the two cores the API shares with it. Measured on one
-- connection (PostgreSQL 18, round trip included): 549 -> 357 us for a batch of one, 276 -> 127
-- us a snapshot in batches of 20. Same signatures, same receipts.
--
-- 1. The batch does its work in one loop instead of calling `nexus.enqueue_snapshot` (and, from
--    there, `pgmq.send`) once a snapshot. `pgmq.send` builds its INSERT as text and runs it with
--    EXECUTE, so Postgres parsed and planned it anew for every snapshot; the ingestion queue's
--    INSERT is written out here, planned once a connection. Other queues still go through
--    `pgmq.send`. `nexus.enqueue_snapshot` (the anon path's, 011) becomes a batch of one, so
--    the rules live in one place.
-- 2. Insert notifications come from Nexus's trigger (011) on every pgmq, once per insert
--    statement. pgmq's own (`enable_notify_insert`, 1.7+) runs a row trigger that updates its
--    throttle table for every message sent: about 85 us a snapshot, a third of the write.

CREATE OR REPLACE FUNCTION nexus.enqueue_snapshots(p_queue text, p_items jsonb)
RETURNS TABLE (idx integer, msg_id bigint, seq integer, duplicate boolean, conflict boolean)
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
            RETURNING s.last_seq INTO v_seq;
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
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Same signature as in 004 and 012: one snapshot, as a batch of one.
CREATE OR REPLACE FUNCTION nexus.enqueue_snapshot(
    p_queue text,
    p_session_id text,
    p_fingerprint_id text,
    p_message jsonb,
    p_headers jsonb,
    p_idempotency_key text DEFAULT NULL,
    p_request_hash text DEFAULT NULL,
    p_delay_ms integer DEFAULT 0
)
RETURNS TABLE (msg_id bigint, seq integer, duplicate boolean, conflict boolean)
LANGUAGE sql
SET search_path = ''
AS $$
    SELECT e.msg_id, e.seq, e.duplicate, e.conflict
    FROM nexus.enqueue_snapshots(p_queue, pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'session_id', p_session_id, 'fingerprint_id', p_fingerprint_id, 'message', p_message,
        'headers', p_headers, 'idempotency_key', p_idempotency_key,
        'request_hash', p_request_hash, 'delay_ms', p_delay_ms))) AS e
$$;

-- As in 011, but Nexus's own trigger notifies on every pgmq, in place of pgmq's row trigger.
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

    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_trigger t
        WHERE t.tgrelid = 'pgmq.q_nexus_prospect_ingestion'::regclass
          AND t.tgname = 'trigger_notify_queue_insert_listeners') THEN
        PERFORM pgmq.disable_notify_insert('nexus_prospect_ingestion');
    END IF;
    DROP TRIGGER IF EXISTS nexus_notify_insert ON pgmq.q_nexus_prospect_ingestion;
    CREATE TRIGGER nexus_notify_insert
        AFTER INSERT ON pgmq.q_nexus_prospect_ingestion
        FOR EACH STATEMENT EXECUTE FUNCTION nexus.notify_queue_insert();
END;
$$;

SELECT nexus.fit_to_pgmq();
