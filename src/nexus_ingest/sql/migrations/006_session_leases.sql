-- Reading snapshots with one session in flight at a time, at the speed of a plain PGMQ read.
--
-- PGMQ's grouped reads (read_grouped_rr, read_grouped_head) group the whole queue on every
-- call: measured here, a 20,000-message backlog of 20,000 sessions drained at under 100
-- messages a second. Instead, a worker leases the sessions of the messages it reads: the lease
-- row is claimed with row locks, so two workers can never both hold a session, and it lapses
-- with the messages' visibility timeout if the worker dies.

ALTER TABLE nexus.sessions ADD COLUMN IF NOT EXISTS leased_until timestamptz;
ALTER TABLE nexus.sessions ADD COLUMN IF NOT EXISTS lease_token uuid;

CREATE OR REPLACE FUNCTION nexus.read_snapshots(p_queue text, p_vt integer, p_qty integer, p_token uuid)
RETURNS SETOF pgmq.message_record
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
            RETURNING s.session_id
        )
        UPDATE pgmq.%1$I m
        SET vt = $2, read_ct = m.read_ct + 1, last_read_at = clock_timestamp()
        FROM candidates c
        WHERE m.msg_id = c.msg_id
          AND (c.session_id IS NULL OR c.session_id IN (SELECT session_id FROM claimed))
        RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.last_read_at, m.vt, m.message, m.headers
    $q$, v_table)
    USING p_qty, v_until, p_token;
END;
$$;

-- Give sessions back once their work is settled (saved, retried or dead-lettered); only the
-- holder of the lease can release it, so a worker that overran its lease cannot free another's.
CREATE OR REPLACE FUNCTION nexus.release_sessions(p_session_ids text[], p_token uuid)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    UPDATE nexus.sessions
    SET leased_until = NULL, lease_token = NULL
    WHERE session_id = ANY(p_session_ids) AND lease_token = p_token
$$;
