-- Two plans that cost the worker as much as the batch squared or the backlog, fixed.
--
-- 1. The read (010) updated the messages it took through a hash join over a sequential scan of
--    the whole queue table: each read of 200 cost as much as the backlog is long (a 4,000-
--    message backlog: 1.4 ms of a 4.1 ms read). The messages are found by their key instead.
ALTER FUNCTION nexus.read_snapshots(text, integer, integer, uuid) SET enable_seqscan = off;

-- 2. The batch merge of 013, its result assembled without a join the planner got wrong. The
--    tombstone check of 012 (`NOT EXISTS` on nexus.forgotten) makes the planner expect one row
--    from `todo` and everything built on it, so it joined the batch's verdicts to its history
--    rows (`judged LEFT JOIN recorded`) with a nested loop that rescanned `recorded` once per
--    item: 200 x 200 rows, most of a 200-item merge (9.7 ms, against 3.7 ms before 012). The
--    outcome needs nothing from `recorded` but whether an id is there, so an array of its ids
--    answers that. Same signature, same results; only the final SELECT differs from 013.

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
            received_at timestamptz, cache_write_tokens integer, batch boolean,
            cost_usd numeric, turns integer)
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
    -- advances nothing. The lease is given back in the same write, and the extraction policy
    -- learns when the session was extracted and how many turns that read.
    advanced AS (
        UPDATE nexus.sessions s
        SET applied_seq = i.seq,
            updated_at = now(),
            extracted_at = now(),
            extracted_turns = i.turns,
            leased_until = CASE WHEN s.lease_token = i.lease THEN NULL ELSE s.leased_until END,
            lease_token = CASE WHEN s.lease_token = i.lease THEN NULL ELSE s.lease_token END
        FROM todo i
        WHERE s.session_id = i.session_id AND i.seq IS NOT NULL AND s.applied_seq < i.seq
        RETURNING s.session_id
    ),
    -- A session the producer never numbered (a direct caller's) starts at this snapshot.
    created AS (
        INSERT INTO nexus.sessions (session_id, fingerprint_id, last_seq, applied_seq,
                                    extracted_at, extracted_turns)
        SELECT i.session_id, i.fingerprint_id, i.seq, i.seq, now(), i.turns
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
            input_tokens, output_tokens, cached_tokens, latency_ms, result, enqueued_at,
            cache_write_tokens, batch, cost_usd)
        SELECT j.msg_id, j.fingerprint_id, j.session_id, j.seq, j.verdict, j.extractor, j.model,
               COALESCE(j.input_tokens, 0), COALESCE(j.output_tokens, 0),
               COALESCE(j.cached_tokens, 0), j.latency_ms, COALESCE(j.data, '{}'), j.enqueued_at,
               COALESCE(j.cache_write_tokens, 0), COALESCE(j.batch, false), j.cost_usd
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
    -- An item's outcome is its verdict when its history row was written now; otherwise its
    -- message was recorded before (a redelivery: a duplicate). Without a message id there is
    -- no redelivery to recognise. The recorded ids are looked up in an array, not joined.
    -- (An uncorrelated ARRAY(subquery): evaluated once, as an InitPlan.)
    SELECT j.msg_id,
           CASE WHEN j.msg_id IS NULL
                  OR j.msg_id = ANY (ARRAY(SELECT r.msg_id FROM recorded r))
                THEN j.verdict ELSE 'duplicate' END
    FROM judged j
    UNION ALL
    SELECT g.msg_id, 'forgotten' FROM gone g;
END;
$$;
