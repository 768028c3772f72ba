-- A forgotten visitor's later snapshots leave no session and no Idempotency-Key behind.
--
-- 1. The producer numbers a snapshot in its session unless the visitor is forgotten, and checks
--    the tombstone without a lock: a snapshot queued while `nexus forget` runs passes the check
--    before the tombstone commits, and creates (or re-creates, once the forget has deleted it)
--    its session after the forget looked for the visitor's sessions. Both commit, and the
--    session stayed for good under the forgotten fingerprint: the worker's read dropped its
--    snapshot (027), and nothing else ever looked at it again.
-- 2. The producer records a request's Idempotency-Key before it looks at the tombstone, so
--    every later POST of a forgotten visitor that carried one left its key (their fingerprint
--    and sessionId) until the keys' own retention, a day, ended.
--
-- The read that drops a forgotten visitor's snapshot now deletes that visitor's session row and
-- keys of its session too, as the save (020) and the release (025) delete the sessions they
-- meet. Such a snapshot is committed with its session and key, so they are found as surely as
-- the snapshot. Only rows under the forgotten fingerprint go: a forgotten visitor's snapshot is
-- queued unnumbered, under whatever sessionId it names, possibly another visitor's. (Locking
-- the tombstones in the producer instead would put a lock on its every request.)

-- As in 027, with the forgotten visitor's session and keys deleted with their snapshots.
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
    -- Looked at once a read: while nobody is forgotten, no snapshot's visitor is looked up.
    v_anyone_forgotten boolean := EXISTS (SELECT 1 FROM nexus.forgotten);
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
               q.message ->> 'fingerprint' AS fingerprint,
               v_anyone_forgotten AND EXISTS (
                   SELECT 1 FROM nexus.forgotten f
                   WHERE f.fingerprint_id = q.message ->> 'fingerprint') AS forgotten
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
        WHERE c.session_id IS NOT NULL AND NOT c.forgotten
        ORDER BY c.session_id
        ON CONFLICT (session_id) DO UPDATE
            SET leased_until = EXCLUDED.leased_until, lease_token = EXCLUDED.lease_token
            WHERE s.leased_until IS NULL OR s.leased_until <= clock_timestamp()
        RETURNING s.session_id, s.last_seq
    ),
    dropped AS (
        -- Deleted, not archived: the archive would keep the conversation (020).
        DELETE FROM pgmq.q_nexus_prospect_ingestion m
        USING candidates c
        WHERE m.msg_id = c.msg_id AND c.forgotten
    ),
    dropped_sessions AS (
        DELETE FROM nexus.sessions s
        USING candidates c
        WHERE c.forgotten AND s.session_id = c.session_id AND s.fingerprint_id = c.fingerprint
    ),
    dropped_keys AS (
        DELETE FROM nexus.idempotency_keys k
        USING candidates c
        WHERE c.forgotten AND k.session_id = c.session_id AND k.fingerprint_id = c.fingerprint
    ),
    taken AS (
        UPDATE pgmq.q_nexus_prospect_ingestion m
        SET vt = v_until, read_ct = m.read_ct + 1, last_read_at = clock_timestamp()
        FROM candidates c LEFT JOIN claimed cl ON cl.session_id = c.session_id
        WHERE m.msg_id = c.msg_id
          AND NOT c.forgotten
          AND (c.session_id IS NULL OR cl.session_id IS NOT NULL)
        RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.message, m.headers, cl.last_seq
    )
    SELECT t.msg_id, t.read_ct, t.enqueued_at, t.message, t.headers, t.last_seq, v_ready_from
    FROM taken t;
END;
$$;

-- The read's text was replaced: leave last_read_at out again where the queue has no such column.
SELECT nexus.fit_to_pgmq();
