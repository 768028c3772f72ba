-- What the producer keeps beside the queue: each session's snapshot counter and the
-- idempotency keys of recent POSTs.

CREATE TABLE IF NOT EXISTS nexus.sessions (
    session_id      text PRIMARY KEY,
    fingerprint_id  text NOT NULL,
    last_seq        integer NOT NULL DEFAULT 0,   -- last snapshot number handed out
    applied_seq     integer NOT NULL DEFAULT 0,   -- newest snapshot merged into prospect_data
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sessions_fingerprint_idx ON nexus.sessions (fingerprint_id);

CREATE TABLE IF NOT EXISTS nexus.idempotency_keys (
    key          text PRIMARY KEY,
    request_hash text NOT NULL,
    msg_id       bigint,
    seq          integer,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON nexus.idempotency_keys (created_at);

-- A snapshot may be held back for p_delay_ms (the coalescing window): if the chat posts a
-- newer snapshot meanwhile, the worker acknowledges this one as superseded without an LLM call.
-- Enqueue one snapshot in a single round trip: number it within its session, send it to
-- PGMQ with the session as FIFO group, and remember the idempotency key, all in the
-- caller's transaction so a crash leaves either everything or nothing.
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
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_seq integer;
    v_msg_id bigint;
    v_prior nexus.idempotency_keys%ROWTYPE;
BEGIN
    IF p_idempotency_key IS NOT NULL THEN
        -- A concurrent request with the same key blocks here until the first one commits.
        INSERT INTO nexus.idempotency_keys (key, request_hash)
        VALUES (p_idempotency_key, p_request_hash)
        ON CONFLICT (key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO v_prior FROM nexus.idempotency_keys k WHERE k.key = p_idempotency_key;
            RETURN QUERY SELECT v_prior.msg_id, v_prior.seq, true,
                                v_prior.request_hash IS DISTINCT FROM p_request_hash;
            RETURN;
        END IF;
    END IF;

    INSERT INTO nexus.sessions AS s (session_id, fingerprint_id, last_seq)
    VALUES (p_session_id, p_fingerprint_id, 1)
    ON CONFLICT (session_id) DO UPDATE
        SET last_seq = s.last_seq + 1, updated_at = now()
    RETURNING s.last_seq INTO v_seq;

    SELECT pgmq.send(
        nexus.stored_queue_name(p_queue),
        p_message || jsonb_build_object('seq', v_seq, 'receivedAt', clock_timestamp()),
        p_headers,
        clock_timestamp() + make_interval(secs => COALESCE(p_delay_ms, 0) / 1000.0)
    ) INTO v_msg_id;

    IF p_idempotency_key IS NOT NULL THEN
        UPDATE nexus.idempotency_keys k SET msg_id = v_msg_id, seq = v_seq
        WHERE k.key = p_idempotency_key;
    END IF;

    RETURN QUERY SELECT v_msg_id, v_seq, false, false;
END;
$$;

-- Many snapshots in one round trip and one commit: under load the producer groups the
-- requests that arrive together. Items are taken session by session (arrival order kept
-- within a session) so concurrent batches lock session rows in the same order.
CREATE OR REPLACE FUNCTION nexus.enqueue_snapshots(p_queue text, p_items jsonb)
RETURNS TABLE (idx integer, msg_id bigint, seq integer, duplicate boolean, conflict boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_idx integer;
    v_item jsonb;
BEGIN
    FOR v_idx, v_item IN
        SELECT (t.ord - 1)::integer, t.value
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(value, ord)
        ORDER BY t.value ->> 'session_id', t.ord
    LOOP
        RETURN QUERY
        SELECT v_idx, e.msg_id, e.seq, e.duplicate, e.conflict
        FROM nexus.enqueue_snapshot(
            p_queue, v_item ->> 'session_id', v_item ->> 'fingerprint_id', v_item -> 'message',
            v_item -> 'headers', v_item ->> 'idempotency_key', v_item ->> 'request_hash',
            COALESCE((v_item ->> 'delay_ms')::integer, 0)) AS e;
    END LOOP;
END;
$$;
