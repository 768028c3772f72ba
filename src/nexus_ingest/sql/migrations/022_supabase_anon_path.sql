-- The anon key's path (011) held to the producer's checks where it fell short of them, and the
-- queues' id sequences closed to the browser roles.

-- 1. As in 011, with the producer's idea of a space and its refusal of invisible characters in
-- ids (nexus_ingest.validation: `str.strip`, `_has_format_characters`). Postgres's `\s` follows
-- the database's locale and misses the no-break and other Unicode spaces, so a sessionId
-- ending in U+00A0, or a turn of nothing but U+00A0, passed here while the producer refused it;
-- and so did ids holding zero-width or bidi characters (Unicode category Cf), which make two
-- ids look the same in the dashboard.
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
    -- What Python's `str.isspace` holds true (Unicode 15).
    c_spaces constant text := '\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000';
    c_blank constant text := '^[' || c_spaces || ']*$';
    c_padded constant text := '^[' || c_spaces || ']|[' || c_spaces || ']$';
    -- Unicode's format characters (category Cf, Unicode 15).
    c_format constant text := '[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]';
    v_key text;
    v_value jsonb;
    v_id text;
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
        END IF;
        v_id := v_value #>> '{}';
        IF v_id ~ c_blank THEN
            RETURN pg_catalog.format('%s: must not be blank', v_key);
        ELSIF pg_catalog.length(v_id) > c_max_id THEN
            RETURN pg_catalog.format('%s: at most %s characters', v_key, c_max_id);
        ELSIF v_id ~ c_control OR v_id ~ c_padded THEN
            RETURN pg_catalog.format('%s: no control characters or surrounding spaces', v_key);
        ELSIF v_id ~ c_format THEN
            RETURN pg_catalog.format('%s: no invisible format characters (zero-width, bidi)', v_key);
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
        ELSIF pg_catalog.jsonb_typeof(v_turn -> 'content') <> 'string' OR (v_turn ->> 'content') ~ c_blank THEN
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

-- 2. Supabase's "Expose Queues via PostgREST" grants USAGE on schema pgmq, and USAGE, SELECT
-- and UPDATE on every sequence in it (now and, by default privileges, later), to anon and
-- authenticated. On a queue's id sequence that is `setval`: one call to the largest bigint and
-- every snapshot is refused, from the producer too, until an operator resets it. Nobody needs
-- them: browsers enqueue through `nexus.send_snapshot`, which runs as its owner. Turning the
-- option on after this migration grants them again (docs/SUPABASE.md says what to run then).
DO $$
DECLARE
    v_queue text;
BEGIN
    FOREACH v_queue IN ARRAY ARRAY['q_nexus_prospect_ingestion', 'q_nexus_prospect_ingestion_dlq'] LOOP
        EXECUTE pg_catalog.format(
            'REVOKE ALL ON SEQUENCE %s FROM anon, authenticated',
            pg_catalog.pg_get_serial_sequence(pg_catalog.format('pgmq.%I', v_queue), 'msg_id'));
    END LOOP;
END
$$;

-- 3. As in 020 (and 021), with the delay bounded. The seed's `delay` was any integer of seconds: one
-- anonymous call could park a snapshot for 24 days, counted all that while in the queue's
-- oldest age, so the producer's health read "degraded" for weeks. A chat turn held back for
-- more than a minute is no longer a chat turn.
CREATE OR REPLACE FUNCTION nexus.send_snapshot(p_message jsonb, p_delay integer DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    c_max_delay constant integer := 60;
    v_problem text := nexus.snapshot_problem(p_message);
    v_receipt record;
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'pgmq_send: not a chat snapshot: %', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Post {"messages": [{"role": "user", "content": "..."}], "fingerprint": "...", "sessionId": "..."}.';
    END IF;
    IF p_delay > c_max_delay THEN
        RAISE EXCEPTION 'pgmq_send: delay: at most % seconds for a chat snapshot', c_max_delay
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Send each turn as it happens, with a delay of 0.';
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
