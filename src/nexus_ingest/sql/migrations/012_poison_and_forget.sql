-- No message can stop the pipeline, no answer can loop it, and a forgotten visitor stays
-- forgotten.
--
-- 1. Forgetting leaves a tombstone. Every later save and dead-letter checks it, so neither an
--    extraction in flight nor a replay brings the visitor back. A save takes a weak lock on the
--    tombstone table before it reads it, and forgetting takes a strong one, so the two never
--    interleave: a save either finishes before the forget (which then erases what it wrote) or
--    starts after it (and sees the tombstone).
-- 2. Merges across a visitor's sessions follow the time the producer received each snapshot:
--    an older snapshot (another tab, a replayed dead letter) fills gaps but never overwrites.
-- 3. Dead letters are written inside Postgres from the queued row itself, so a body Python
--    cannot decode, or a reason it could not store, never keeps a message from its dead letter.
-- 4. Idempotency keys belong to one visitor's session: nobody can claim another's.

CREATE TABLE IF NOT EXISTS nexus.forgotten (
    fingerprint_id text PRIMARY KEY,
    forgotten_at   timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON nexus.forgotten FROM PUBLIC;

ALTER TABLE public.prospect_data ADD COLUMN IF NOT EXISTS last_received_at timestamptz;

-- Idempotency keys, scoped by the visitor and the session they were sent for.
ALTER TABLE nexus.idempotency_keys ADD COLUMN IF NOT EXISTS fingerprint_id text NOT NULL DEFAULT '';
ALTER TABLE nexus.idempotency_keys ADD COLUMN IF NOT EXISTS session_id text NOT NULL DEFAULT '';
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint
        WHERE conname = 'idempotency_keys_pkey' AND conrelid = 'nexus.idempotency_keys'::regclass
          AND array_length(conkey, 1) = 1
    ) THEN
        ALTER TABLE nexus.idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
        ALTER TABLE nexus.idempotency_keys
            ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (session_id, fingerprint_id, key);
    END IF;
END
$$;

-- Same signature as in 004; only the idempotency key's scope and the tombstone check are new.
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
        INSERT INTO nexus.idempotency_keys (session_id, fingerprint_id, key, request_hash)
        VALUES (p_session_id, p_fingerprint_id, p_idempotency_key, p_request_hash)
        ON CONFLICT (session_id, fingerprint_id, key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO v_prior FROM nexus.idempotency_keys k
            WHERE k.session_id = p_session_id AND k.fingerprint_id = p_fingerprint_id
              AND k.key = p_idempotency_key;
            RETURN QUERY SELECT v_prior.msg_id, v_prior.seq, true,
                                v_prior.request_hash IS DISTINCT FROM p_request_hash;
            RETURN;
        END IF;
    END IF;

    -- A forgotten visitor's snapshot is queued (the chat gets its usual answer) but numbered in
    -- no session: the worker drops it instead of saving it.
    IF NOT EXISTS (SELECT 1 FROM nexus.forgotten f WHERE f.fingerprint_id = p_fingerprint_id) THEN
        INSERT INTO nexus.sessions AS s (session_id, fingerprint_id, last_seq)
        VALUES (p_session_id, p_fingerprint_id, 1)
        ON CONFLICT (session_id) DO UPDATE
            SET last_seq = s.last_seq + 1, updated_at = now()
        RETURNING s.last_seq INTO v_seq;
    END IF;

    SELECT pgmq.send(
        nexus.stored_queue_name(p_queue),
        p_message || jsonb_build_object('seq', v_seq, 'receivedAt', clock_timestamp()),
        p_headers,
        clock_timestamp() + make_interval(secs => COALESCE(p_delay_ms, 0) / 1000.0)
    ) INTO v_msg_id;

    IF p_idempotency_key IS NOT NULL THEN
        UPDATE nexus.idempotency_keys k SET msg_id = v_msg_id, seq = v_seq
        WHERE k.session_id = p_session_id AND k.fingerprint_id = p_fingerprint_id
          AND k.key = p_idempotency_key;
    END IF;

    RETURN QUERY SELECT v_msg_id, v_seq, false, false;
END;
$$;

-- Which of two values a merge keeps. The newer snapshot's value replaces (a null or blank one
-- never erases); an older snapshot's only fills a gap. Without both times, newer is assumed.
CREATE OR REPLACE FUNCTION nexus.merge_text_at(
    old_value text, new_value text, old_at timestamptz, new_at timestamptz
)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN old_at IS NULL OR new_at IS NULL OR new_at >= old_at
            THEN COALESCE(NULLIF(pg_catalog.btrim(new_value), ''), old_value)
        ELSE COALESCE(old_value, NULLIF(pg_catalog.btrim(new_value), ''))
    END
$$;

-- Merge a batch of extractions of distinct sessions and distinct visitors in one statement
-- (see 010 for the statement's shape). New here: items carry `received_at`, the time the
-- producer received the snapshot (else `enqueued_at`), which orders merges across a visitor's
-- sessions; items of a forgotten visitor merge nothing and answer 'forgotten'.
CREATE OR REPLACE FUNCTION nexus.merge_extractions(p_items jsonb)
RETURNS TABLE (msg_id bigint, outcome text)
LANGUAGE plpgsql
SET search_path = ''
-- A batch touches its own rows by key; see 010 for why the planner is kept off seq scans.
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH items AS MATERIALIZED (
        SELECT i.*, COALESCE(i.received_at, i.enqueued_at) AS at
        FROM jsonb_to_recordset(p_items) AS i(
            msg_id bigint, fingerprint_id text, session_id text, seq integer, lease uuid,
            data jsonb, extractor text, model text, input_tokens integer, output_tokens integer,
            cached_tokens integer, latency_ms real, enqueued_at timestamptz,
            received_at timestamptz)
    ),
    -- One INSERT ... ON CONFLICT may touch a row only once: a batch with two items of one
    -- session or one visitor merges nothing here, and save_extractions merges it in rounds.
    batch AS MATERIALIZED (
        SELECT count(*) = count(DISTINCT x.session_id)
               AND count(*) = count(DISTINCT x.fingerprint_id) AS ok
        FROM items x
    ),
    gone AS MATERIALIZED (
        SELECT i.msg_id, i.session_id
        FROM items i JOIN nexus.forgotten f ON f.fingerprint_id = i.fingerprint_id
        WHERE (SELECT b.ok FROM batch b)
    ),
    todo AS MATERIALIZED (
        SELECT i.* FROM items i
        WHERE (SELECT b.ok FROM batch b)
          AND NOT EXISTS (SELECT 1 FROM nexus.forgotten f WHERE f.fingerprint_id = i.fingerprint_id)
    ),
    -- A forgotten visitor's sessions (the read may have leased them anew) go as well.
    dropped AS (
        DELETE FROM nexus.sessions s
        USING gone g
        WHERE s.session_id = g.session_id
          AND s.fingerprint_id IN (SELECT f.fingerprint_id FROM nexus.forgotten f)
    ),
    -- The row lock serialises concurrent merges of one session, and an older snapshot
    -- advances nothing. The lease is given back in the same write.
    advanced AS (
        UPDATE nexus.sessions s
        SET applied_seq = i.seq,
            updated_at = now(),
            leased_until = CASE WHEN s.lease_token = i.lease THEN NULL ELSE s.leased_until END,
            lease_token = CASE WHEN s.lease_token = i.lease THEN NULL ELSE s.lease_token END
        FROM todo i
        WHERE s.session_id = i.session_id AND i.seq IS NOT NULL AND s.applied_seq < i.seq
        RETURNING s.session_id
    ),
    -- A session the producer never numbered (a direct caller's) starts at this snapshot.
    created AS (
        INSERT INTO nexus.sessions (session_id, fingerprint_id, last_seq, applied_seq)
        SELECT i.session_id, i.fingerprint_id, i.seq, i.seq
        FROM todo i
        WHERE i.seq IS NOT NULL AND i.session_id NOT IN (SELECT a.session_id FROM advanced a)
        ON CONFLICT (session_id) DO NOTHING
        RETURNING session_id
    ),
    judged AS MATERIALIZED (
        SELECT i.*,
               CASE WHEN i.seq IS NULL
                      OR i.session_id IN (SELECT a.session_id FROM advanced a)
                      OR i.session_id IN (SELECT c.session_id FROM created c)
                    THEN 'applied' ELSE 'stale' END AS verdict
        FROM todo i
    ),
    -- Sessions that did not advance (stale snapshots, redeliveries) give their lease back too.
    released AS (
        UPDATE nexus.sessions s
        SET leased_until = NULL, lease_token = NULL
        FROM judged j
        WHERE j.verdict = 'stale' AND s.session_id = j.session_id AND s.lease_token = j.lease
    ),
    -- A message is recorded at most once, whatever redeliveries happen: a second recording
    -- of the same message id is a duplicate and merges nothing.
    recorded AS (
        INSERT INTO public.prospect_extractions AS e (
            msg_id, fingerprint_id, session_id, seq, outcome, extractor, model,
            input_tokens, output_tokens, cached_tokens, latency_ms, result, enqueued_at)
        SELECT j.msg_id, j.fingerprint_id, j.session_id, j.seq, j.verdict, j.extractor, j.model,
               COALESCE(j.input_tokens, 0), COALESCE(j.output_tokens, 0),
               COALESCE(j.cached_tokens, 0), j.latency_ms, COALESCE(j.data, '{}'), j.enqueued_at
        FROM judged j
        ON CONFLICT (msg_id) WHERE msg_id IS NOT NULL DO NOTHING
        RETURNING e.msg_id, e.outcome
    ),
    -- The merge rules: the newer snapshot's value replaces, a null or blank never erases, an
    -- older snapshot only fills gaps, lists are unioned (only when the new one has items:
    -- merging nothing leaves a stored list as it is).
    merged AS (
        INSERT INTO public.prospect_data AS p (
            fingerprint_id, session_id, nombre, email, telefono, empresa, cargo, ubicacion,
            productos_interes, presupuesto, plazo, nivel_interes, intencion, idioma, resumen,
            last_msg_id, extraction_count, last_received_at)
        SELECT
            j.fingerprint_id, j.session_id,
            NULLIF(btrim(j.data ->> 'nombre'), ''),
            NULLIF(btrim(j.data ->> 'email'), ''),
            NULLIF(btrim(j.data ->> 'telefono'), ''),
            NULLIF(btrim(j.data ->> 'empresa'), ''),
            NULLIF(btrim(j.data ->> 'cargo'), ''),
            NULLIF(btrim(j.data ->> 'ubicacion'), ''),
            CASE WHEN COALESCE(j.data -> 'productos_interes', 'null') IN ('null', '[]')
                 THEN '{}'::text[]
                 ELSE nexus.merge_list('{}', nexus.jsonb_text_array(j.data -> 'productos_interes'))
            END,
            NULLIF(btrim(j.data ->> 'presupuesto'), ''),
            NULLIF(btrim(j.data ->> 'plazo'), ''),
            nexus.jsonb_interest(j.data -> 'nivel_interes'),
            nexus.jsonb_intent(j.data -> 'intencion'),
            NULLIF(btrim(j.data ->> 'idioma'), ''),
            NULLIF(btrim(j.data ->> 'resumen'), ''),
            j.msg_id, 1, j.at
        FROM judged j
        WHERE j.verdict = 'applied'
          AND (j.msg_id IS NULL OR j.msg_id IN (SELECT r.msg_id FROM recorded r))
        ON CONFLICT (fingerprint_id) DO UPDATE SET
            session_id        = CASE WHEN p.last_received_at IS NULL
                                       OR EXCLUDED.last_received_at IS NULL
                                       OR EXCLUDED.last_received_at >= p.last_received_at
                                     THEN EXCLUDED.session_id ELSE p.session_id END,
            nombre            = nexus.merge_text_at(p.nombre, EXCLUDED.nombre, p.last_received_at, EXCLUDED.last_received_at),
            email             = nexus.merge_text_at(p.email, EXCLUDED.email, p.last_received_at, EXCLUDED.last_received_at),
            telefono          = nexus.merge_text_at(p.telefono, EXCLUDED.telefono, p.last_received_at, EXCLUDED.last_received_at),
            empresa           = nexus.merge_text_at(p.empresa, EXCLUDED.empresa, p.last_received_at, EXCLUDED.last_received_at),
            cargo             = nexus.merge_text_at(p.cargo, EXCLUDED.cargo, p.last_received_at, EXCLUDED.last_received_at),
            ubicacion         = nexus.merge_text_at(p.ubicacion, EXCLUDED.ubicacion, p.last_received_at, EXCLUDED.last_received_at),
            productos_interes = CASE WHEN cardinality(EXCLUDED.productos_interes) = 0
                                     THEN p.productos_interes
                                     ELSE nexus.merge_list(p.productos_interes, EXCLUDED.productos_interes)
                                END,
            presupuesto       = nexus.merge_text_at(p.presupuesto, EXCLUDED.presupuesto, p.last_received_at, EXCLUDED.last_received_at),
            plazo             = nexus.merge_text_at(p.plazo, EXCLUDED.plazo, p.last_received_at, EXCLUDED.last_received_at),
            nivel_interes     = CASE WHEN p.last_received_at IS NULL
                                       OR EXCLUDED.last_received_at IS NULL
                                       OR EXCLUDED.last_received_at >= p.last_received_at
                                     THEN COALESCE(EXCLUDED.nivel_interes, p.nivel_interes)
                                     ELSE COALESCE(p.nivel_interes, EXCLUDED.nivel_interes) END,
            intencion         = nexus.merge_text_at(p.intencion, EXCLUDED.intencion, p.last_received_at, EXCLUDED.last_received_at),
            idioma            = nexus.merge_text_at(p.idioma, EXCLUDED.idioma, p.last_received_at, EXCLUDED.last_received_at),
            resumen           = nexus.merge_text_at(p.resumen, EXCLUDED.resumen, p.last_received_at, EXCLUDED.last_received_at),
            last_msg_id       = COALESCE(EXCLUDED.last_msg_id, p.last_msg_id),
            extraction_count  = p.extraction_count + 1,
            last_received_at  = GREATEST(p.last_received_at, EXCLUDED.last_received_at),
            updated_at        = now()
    )
    -- Without a message id there is no redelivery to recognise.
    SELECT j.msg_id,
           CASE WHEN j.msg_id IS NULL THEN j.verdict ELSE COALESCE(r.outcome, 'duplicate') END
    FROM judged j LEFT JOIN recorded r ON r.msg_id = j.msg_id
    UNION ALL
    SELECT g.msg_id, 'forgotten' FROM gone g;
END;
$$;

-- As in 010, plus the lock that keeps a save and a forget from interleaving (see the top of
-- this file): taken before the merge statement, whose snapshot then sees any tombstone.
CREATE OR REPLACE FUNCTION nexus.save_extractions(
    p_queue text,
    p_items jsonb,
    p_archive boolean DEFAULT false
)
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
    LOCK TABLE nexus.forgotten IN ROW SHARE MODE;

    SELECT array_agg(m.msg_id), array_agg(m.outcome)
    INTO v_msg_ids, v_outcomes
    FROM nexus.merge_extractions(p_items) m;

    IF v_msg_ids IS NULL AND jsonb_array_length(p_items) > 0 THEN
        -- Several extractions of one visitor: merge them in rounds, in arrival order, as one
        -- call each would. A session posted under two visitors (bad input) is merged one
        -- extraction at a time.
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
        PERFORM pgmq.archive(nexus.stored_queue_name(p_queue), v_msg_ids);
    ELSE
        PERFORM pgmq.delete(nexus.stored_queue_name(p_queue), v_msg_ids);
    END IF;
    RETURN QUERY SELECT * FROM unnest(v_msg_ids, v_outcomes);
END;
$$;

-- Move messages to the dead-letter queue with why, archiving the originals; the dead letter is
-- built here from the queued row, so whatever its body holds it is kept exactly. A forgotten
-- visitor's message is deleted instead. Returns each message and its dead letter's id (null
-- when it was deleted, or was no longer queued).
CREATE OR REPLACE FUNCTION nexus.dead_letter(
    p_queue text, p_dlq text, p_msg_ids bigint[], p_errors jsonb[]
)
RETURNS TABLE (msg_id bigint, dead_letter_id bigint)
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_queue text := nexus.stored_queue_name(p_queue);
    v_moved bigint[];
    v_letters bigint[];
    v_forgotten bigint[];
BEGIN
    LOCK TABLE nexus.forgotten IN ROW SHARE MODE;
    EXECUTE format($q$
        WITH chosen AS (
            SELECT q.msg_id, q.message, q.headers, e.error,
                   EXISTS (SELECT 1 FROM nexus.forgotten f
                           WHERE f.fingerprint_id = q.message ->> 'fingerprint') AS forgotten
            FROM unnest($1::bigint[], $2::jsonb[]) AS e(msg_id, error)
            JOIN pgmq.%I q ON q.msg_id = e.msg_id
        ),
        sent AS (
            SELECT c.msg_id,
                   pgmq.send($3,
                             jsonb_build_object('original', c.message, 'originalMsgId', c.msg_id,
                                                'error', c.error),
                             COALESCE(c.headers, '{}'::jsonb)) AS dead_letter_id
            FROM chosen c
            WHERE NOT c.forgotten
            ORDER BY c.msg_id
        )
        SELECT (SELECT array_agg(s.msg_id ORDER BY s.msg_id) FROM sent s),
               (SELECT array_agg(s.dead_letter_id ORDER BY s.msg_id) FROM sent s),
               (SELECT array_agg(c.msg_id) FROM chosen c WHERE c.forgotten)
    $q$, 'q_' || v_queue)
    INTO v_moved, v_letters, v_forgotten
    USING p_msg_ids, p_errors, nexus.stored_queue_name(p_dlq);
    IF v_moved IS NOT NULL THEN
        PERFORM pgmq.archive(v_queue, v_moved);
    END IF;
    IF v_forgotten IS NOT NULL THEN
        PERFORM pgmq.delete(v_queue, v_forgotten);
    END IF;
    RETURN QUERY
        SELECT m.id, m.letter FROM unnest(v_moved, v_letters) AS m(id, letter)
        UNION ALL
        SELECT f.id, NULL::bigint FROM unnest(v_forgotten) AS f(id);
END;
$$;

-- Forget a visitor: the tombstone first, under the lock every save and dead-letter takes, then
-- everything held about them (prospect row, history, sessions, queued, archived and dead
-- messages, idempotency keys).
CREATE OR REPLACE FUNCTION nexus.forget_prospect(p_fingerprint_id text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_counts jsonb := '{}';
    v_n bigint;
BEGIN
    LOCK TABLE nexus.forgotten IN EXCLUSIVE MODE;
    INSERT INTO nexus.forgotten (fingerprint_id) VALUES (p_fingerprint_id)
    ON CONFLICT (fingerprint_id) DO UPDATE SET forgotten_at = now();
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
    DELETE FROM nexus.idempotency_keys WHERE fingerprint_id = p_fingerprint_id;
    RETURN v_counts;
END;
$$;

REVOKE ALL ON FUNCTION nexus.dead_letter(text, text, bigint[], jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION nexus.forget_prospect(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION nexus.merge_text_at(text, text, timestamptz, timestamptz) FROM PUBLIC;
