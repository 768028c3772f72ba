-- The worker's hot path in two statements per batch: one read, one save.
--
-- Before this, every extraction was merged by its own `update_prospect_data` call, then the
-- batch was deleted and its sessions released by further statements, and each read needed a
-- second query for the sessions' newest snapshot numbers. Measured on a 20,000-message
-- backlog, statement overhead (in Postgres and in the driver) was most of the cost of a
-- message. `update_prospect_data` stays as the one-row entry point for direct callers and now
-- merges through the same statement as a batch.

-- The group index served PGMQ's grouped reads, which 006 replaced; every insert and every read
-- (a read moves `vt`, an indexed column, so the row is rewritten) paid for it.
DROP INDEX IF EXISTS pgmq.q_nexus_prospect_ingestion_group_idx;

-- A session row is rewritten three times per snapshot (numbered, leased, advanced). With room
-- left on its page the new version stays there without new index entries (a HOT update):
-- measured over a 20,000-message drain, 57% of those updates instead of 14%.
ALTER TABLE nexus.sessions SET (fillfactor = 70);

-- The merge rules' one-line helpers (005), made inlinable: Postgres never inlines a function
-- with a SET clause, and called one row at a time they were a third of a batch merge's cost.
-- Without SET search_path, every built-in function they call is named with its schema.
CREATE OR REPLACE FUNCTION nexus.merge_text(old_value text, new_value text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT COALESCE(NULLIF(pg_catalog.btrim(new_value), ''), old_value) $$;

CREATE OR REPLACE FUNCTION nexus.jsonb_text_array(value jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE pg_catalog.jsonb_typeof(value)
        WHEN 'array' THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(value))
        WHEN 'string' THEN ARRAY[value #>> '{}']
        ELSE '{}'::text[]
    END
$$;

-- Out-of-range values are clamped here too, so a direct caller cannot break the row's checks.
CREATE OR REPLACE FUNCTION nexus.jsonb_interest(value jsonb)
RETURNS smallint
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN pg_catalog.jsonb_typeof(value) = 'number'
            THEN GREATEST(1, LEAST(10, pg_catalog.round((value #>> '{}')::numeric)))::smallint
        WHEN pg_catalog.jsonb_typeof(value) = 'string'
             AND (value #>> '{}') ~ '^\s*\d{1,2}\s*$'
            THEN GREATEST(1, LEAST(10, pg_catalog.btrim(value #>> '{}')::integer))::smallint
    END
$$;

CREATE OR REPLACE FUNCTION nexus.jsonb_intent(value jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN pg_catalog.lower(pg_catalog.btrim(value #>> '{}'))
                IN ('compra', 'informacion', 'soporte', 'queja', 'otro')
            THEN pg_catalog.lower(pg_catalog.btrim(value #>> '{}'))
        WHEN NULLIF(pg_catalog.btrim(value #>> '{}'), '') IS NOT NULL THEN 'otro'
    END
$$;

-- The read also returns the newest snapshot number handed out for each message's session, so
-- the worker knows which snapshots are superseded without asking again. Messages come back in
-- no particular order.
DROP FUNCTION IF EXISTS nexus.read_snapshots(text, integer, integer, uuid);
CREATE FUNCTION nexus.read_snapshots(p_queue text, p_vt integer, p_qty integer, p_token uuid)
RETURNS TABLE (
    msg_id bigint,
    read_ct integer,
    enqueued_at timestamptz,
    message jsonb,
    headers jsonb,
    last_seq integer
)
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_until timestamptz := clock_timestamp() + make_interval(secs => p_vt);
    v_table text := 'q_' || nexus.stored_queue_name(p_queue);
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH candidates AS (
            SELECT q.msg_id, q.headers ->> 'x-pgmq-group' AS session_id, q.message ->> 'fingerprint' AS fingerprint
            FROM pgmq.%1$I q
            WHERE q.vt <= clock_timestamp()
              AND NOT EXISTS (
                  SELECT 1 FROM nexus.sessions s
                  WHERE s.session_id = q.headers ->> 'x-pgmq-group' AND s.leased_until > clock_timestamp())
            ORDER BY q.msg_id
            LIMIT $1
            FOR UPDATE OF q SKIP LOCKED
        ),
        claimed AS (
            -- Row locks serialise concurrent claims; the loser re-checks the lease and skips.
            INSERT INTO nexus.sessions AS s (session_id, fingerprint_id, leased_until, lease_token)
            SELECT DISTINCT ON (c.session_id) c.session_id, COALESCE(c.fingerprint, ''), $2, $3
            FROM candidates c
            WHERE c.session_id IS NOT NULL
            ORDER BY c.session_id
            ON CONFLICT (session_id) DO UPDATE
                SET leased_until = EXCLUDED.leased_until, lease_token = EXCLUDED.lease_token
                WHERE s.leased_until IS NULL OR s.leased_until <= clock_timestamp()
            RETURNING s.session_id, s.last_seq
        ),
        taken AS (
            UPDATE pgmq.%1$I m
            SET vt = $2, read_ct = m.read_ct + 1, last_read_at = clock_timestamp()
            FROM candidates c LEFT JOIN claimed cl ON cl.session_id = c.session_id
            WHERE m.msg_id = c.msg_id
              AND (c.session_id IS NULL OR cl.session_id IS NOT NULL)
            RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.message, m.headers, cl.last_seq
        )
        SELECT * FROM taken
    $q$, v_table)
    USING p_qty, v_until, p_token;
END;
$$;

-- Merge a batch of extractions of distinct sessions and distinct visitors in one statement:
-- advance each session's applied snapshot (which is also the staleness check) and give its
-- lease back, record the history, merge prospect_data. Returns each message's outcome, as
-- `update_prospect_data` would: 'applied', 'stale' or 'duplicate'. Returns nothing, and
-- changes nothing, when two items share a session or a visitor: one INSERT ... ON CONFLICT may
-- touch a row only once, so such batches are merged in rounds by save_extractions.
CREATE OR REPLACE FUNCTION nexus.merge_extractions(p_items jsonb)
RETURNS TABLE (msg_id bigint, outcome text)
LANGUAGE plpgsql
SET search_path = ''
-- A batch touches its own rows by key. Guessing ~100 items against a table of a few thousand
-- sessions, the planner preferred scanning the whole table, which made every save cost as much
-- as the table is large (measured: 13 ms instead of 8 for 200 items at 20,000 sessions).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH items AS MATERIALIZED (
        SELECT *
        FROM jsonb_to_recordset(p_items) AS i(
            msg_id bigint, fingerprint_id text, session_id text, seq integer, lease uuid,
            data jsonb, extractor text, model text, input_tokens integer, output_tokens integer,
            cached_tokens integer, latency_ms real, enqueued_at timestamptz)
    ),
    todo AS MATERIALIZED (
        SELECT i.* FROM items i
        WHERE (SELECT count(*) = count(DISTINCT x.session_id)
                      AND count(*) = count(DISTINCT x.fingerprint_id)
               FROM items x)
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
    -- The merge rules: a new value replaces, a null or blank never erases, lists are unioned
    -- (only when the new one has items: merging nothing leaves a stored list as it is).
    merged AS (
        INSERT INTO public.prospect_data AS p (
            fingerprint_id, session_id, nombre, email, telefono, empresa, cargo, ubicacion,
            productos_interes, presupuesto, plazo, nivel_interes, intencion, idioma, resumen,
            last_msg_id, extraction_count)
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
            j.msg_id, 1
        FROM judged j
        WHERE j.verdict = 'applied'
          AND (j.msg_id IS NULL OR j.msg_id IN (SELECT r.msg_id FROM recorded r))
        ON CONFLICT (fingerprint_id) DO UPDATE SET
            session_id        = EXCLUDED.session_id,
            nombre            = nexus.merge_text(p.nombre, EXCLUDED.nombre),
            email             = nexus.merge_text(p.email, EXCLUDED.email),
            telefono          = nexus.merge_text(p.telefono, EXCLUDED.telefono),
            empresa           = nexus.merge_text(p.empresa, EXCLUDED.empresa),
            cargo             = nexus.merge_text(p.cargo, EXCLUDED.cargo),
            ubicacion         = nexus.merge_text(p.ubicacion, EXCLUDED.ubicacion),
            productos_interes = CASE WHEN cardinality(EXCLUDED.productos_interes) = 0
                                     THEN p.productos_interes
                                     ELSE nexus.merge_list(p.productos_interes, EXCLUDED.productos_interes)
                                END,
            presupuesto       = nexus.merge_text(p.presupuesto, EXCLUDED.presupuesto),
            plazo             = nexus.merge_text(p.plazo, EXCLUDED.plazo),
            nivel_interes     = COALESCE(EXCLUDED.nivel_interes, p.nivel_interes),
            intencion         = nexus.merge_text(p.intencion, EXCLUDED.intencion),
            idioma            = nexus.merge_text(p.idioma, EXCLUDED.idioma),
            resumen           = nexus.merge_text(p.resumen, EXCLUDED.resumen),
            last_msg_id       = COALESCE(EXCLUDED.last_msg_id, p.last_msg_id),
            extraction_count  = p.extraction_count + 1,
            updated_at        = now()
    )
    -- Without a message id there is no redelivery to recognise.
    SELECT j.msg_id,
           CASE WHEN j.msg_id IS NULL THEN j.verdict ELSE COALESCE(r.outcome, 'duplicate') END
    FROM judged j LEFT JOIN recorded r ON r.msg_id = j.msg_id;
END;
$$;

-- Merge a batch of extractions, record their history, remove their messages from the queue
-- (archiving them when p_archive) and give their sessions back, all in the caller's
-- transaction. Items are a JSON array of objects with msg_id, fingerprint_id, session_id, seq,
-- lease (the token the session was read under), data (the extracted prospect), extractor,
-- model, input_tokens, output_tokens, cached_tokens, latency_ms and enqueued_at. Returns each
-- message's outcome: 'applied', 'stale' or 'duplicate'.
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

-- One extraction, merged by the same statement as a batch, so the merge rules live in one place.
-- Same signature, defaults and grants as in 005.
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
    p_enqueued_at timestamptz DEFAULT NULL
)
RETURNS text
LANGUAGE sql SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT m.outcome
    FROM nexus.merge_extractions(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'msg_id', p_msg_id, 'fingerprint_id', p_fingerprint_id, 'session_id', p_session_id,
        'seq', p_seq, 'data', p_data, 'extractor', p_extractor, 'model', p_model,
        'input_tokens', p_input_tokens, 'output_tokens', p_output_tokens,
        'cached_tokens', p_cached_tokens, 'latency_ms', p_latency_ms,
        'enqueued_at', p_enqueued_at))) AS m
$$;

REVOKE ALL ON FUNCTION nexus.merge_extractions(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION nexus.save_extractions(text, jsonb, boolean) FROM PUBLIC;
