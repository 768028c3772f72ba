-- The worker's read and save name the ingestion queue's table in their SQL instead of building
-- the statement from the queue's name on every call (`EXECUTE format(...)`, in the read since
-- 010 and inside `pgmq.delete`). A statement built at run time is parsed and planned again each
-- time; one written out is parsed once per connection and its plan kept while the tables'
-- statistics hold. At a trickle, where a read takes a few messages, that was half of the read:
-- a read of seven messages took 0.59 ms of its backend's CPU before, 0.27 ms after, and the
-- save of them 0.70 ms before, 0.62 ms after (docs/PERFORMANCE.md). A worker with nothing to do
-- polls with such reads too.
--
-- Nexus has one ingestion queue (`QUEUE_NAME`; queries.sql already names its table), so the
-- functions keep their queue parameter for their callers and refuse any other queue. Large
-- reads keep custom plans: Postgres plans a statement again with its values while a plan for
-- any value would cost more (tests/integration/test_batch_save.py reads a long backlog with
-- both).

CREATE OR REPLACE FUNCTION nexus.ingestion_queue_only(p_queue text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = ''
AS $$
BEGIN
    IF nexus.stored_queue_name(p_queue) IS DISTINCT FROM 'nexus_prospect_ingestion' THEN
        RAISE EXCEPTION 'Nexus reads and saves the queue nexus_prospect_ingestion only, not %',
            pg_catalog.quote_literal(p_queue)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION nexus.ingestion_queue_only(text) FROM PUBLIC;

-- As in 016, with the queue's table named.
CREATE OR REPLACE FUNCTION nexus.read_snapshots(
    p_queue text, p_vt integer, p_qty integer, p_token uuid, p_after bigint DEFAULT 0)
RETURNS TABLE (
    msg_id bigint,
    read_ct integer,
    enqueued_at timestamptz,
    message jsonb,
    headers jsonb,
    last_seq integer,
    ready_from bigint
)
LANGUAGE plpgsql
SET search_path = ''
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_until timestamptz := clock_timestamp() + make_interval(secs => p_vt);
    v_ready_from bigint;
BEGIN
    PERFORM nexus.ingestion_queue_only(p_queue);
    -- Only a full read's answer bounds later reads, so only a full read looks for it.
    IF p_after = 0 THEN
        SELECT min(q.msg_id) INTO v_ready_from
        FROM pgmq.q_nexus_prospect_ingestion q
        WHERE q.vt <= clock_timestamp();
    END IF;

    RETURN QUERY
    WITH candidates AS (
        SELECT q.msg_id, q.headers ->> 'x-pgmq-group' AS session_id,
               q.message ->> 'fingerprint' AS fingerprint
        FROM pgmq.q_nexus_prospect_ingestion q
        WHERE q.msg_id > p_after
          AND q.vt <= clock_timestamp()
          AND NOT EXISTS (
              SELECT 1 FROM nexus.sessions s
              WHERE s.session_id = q.headers ->> 'x-pgmq-group'
                AND s.leased_until > clock_timestamp())
        ORDER BY q.msg_id
        LIMIT p_qty
        FOR UPDATE OF q SKIP LOCKED
    ),
    claimed AS (
        -- Row locks serialise concurrent claims; the loser re-checks the lease and skips.
        INSERT INTO nexus.sessions AS s (session_id, fingerprint_id, leased_until, lease_token)
        SELECT DISTINCT ON (c.session_id) c.session_id, COALESCE(c.fingerprint, ''), v_until,
               p_token
        FROM candidates c
        WHERE c.session_id IS NOT NULL
        ORDER BY c.session_id
        ON CONFLICT (session_id) DO UPDATE
            SET leased_until = EXCLUDED.leased_until, lease_token = EXCLUDED.lease_token
            WHERE s.leased_until IS NULL OR s.leased_until <= clock_timestamp()
        RETURNING s.session_id, s.last_seq
    ),
    taken AS (
        UPDATE pgmq.q_nexus_prospect_ingestion m
        SET vt = v_until, read_ct = m.read_ct + 1, last_read_at = clock_timestamp()
        FROM candidates c LEFT JOIN claimed cl ON cl.session_id = c.session_id
        WHERE m.msg_id = c.msg_id
          AND (c.session_id IS NULL OR cl.session_id IS NOT NULL)
        RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.message, m.headers, cl.last_seq
    )
    SELECT t.msg_id, t.read_ct, t.enqueued_at, t.message, t.headers, t.last_seq, v_ready_from
    FROM taken t;
END;
$$;

-- As in 012, with the acknowledgement written out.
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
    PERFORM nexus.ingestion_queue_only(p_queue);
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
        DELETE FROM pgmq.q_nexus_prospect_ingestion q WHERE q.msg_id = ANY (v_msg_ids);
    END IF;
    RETURN QUERY SELECT * FROM unnest(v_msg_ids, v_outcomes);
END;
$$;

-- The read's text was replaced: leave last_read_at out again where the queue has no such column.
SELECT nexus.fit_to_pgmq();
