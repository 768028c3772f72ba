-- The worker's read, started past the messages it knows are gone. The read takes the oldest
-- visible messages in id order, so its index scan starts at the queue's first id and steps over
-- every deleted message still in the index. Vacuum removes them within a minute, unless a
-- transaction somewhere (a stuck report, a replication slot) holds the xmin horizon: then they
-- pile up, 18,000 a minute at 300 snapshots a second, and every read steps over all of them
-- (measured under such a transaction: 14,300 buffers and 11 ms for a read that took 8 messages).
--
-- `p_after` bounds the scan: only messages with a larger id are read. On a full read
-- (p_after = 0), `ready_from` is the id of the oldest message ready to be read, its session
-- leased or not (null when none is, and on a bounded read). The worker reads everything once a
-- second, and bounds the reads in between by what such a full read told it at least a second
-- before (see worker/floor.py). A message the bound skips (one committed late, or one whose
-- visibility timeout ran out) is read by the next full read: later, never lost. With p_after = 0
-- the read is that of 010; callers that select its six columns by name (queries.sql) are
-- unchanged.

DROP FUNCTION nexus.read_snapshots(text, integer, integer, uuid);
CREATE FUNCTION nexus.read_snapshots(
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
-- As in 014: a read takes its messages through the indexes, never a scan of the whole queue.
SET enable_seqscan = off
AS $$
DECLARE
    v_until timestamptz := clock_timestamp() + make_interval(secs => p_vt);
    v_table text := 'q_' || nexus.stored_queue_name(p_queue);
    v_ready_from bigint;
BEGIN
    -- Only a full read's answer bounds later reads, so only a full read looks for it.
    IF p_after = 0 THEN
        EXECUTE format($q$
            SELECT min(q.msg_id) FROM pgmq.%1$I q WHERE q.vt <= clock_timestamp()
        $q$, v_table)
        INTO v_ready_from;
    END IF;

    RETURN QUERY EXECUTE format($q$
        WITH candidates AS (
            SELECT q.msg_id, q.headers ->> 'x-pgmq-group' AS session_id, q.message ->> 'fingerprint' AS fingerprint
            FROM pgmq.%1$I q
            WHERE q.msg_id > $4
              AND q.vt <= clock_timestamp()
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
        SELECT t.*, $5 FROM taken t
    $q$, v_table)
    USING p_qty, v_until, p_token, p_after, v_ready_from;
END;
$$;
REVOKE EXECUTE ON FUNCTION nexus.read_snapshots(text, integer, integer, uuid, bigint) FROM PUBLIC;

-- As in 015, with the read's new signature.
CREATE OR REPLACE FUNCTION nexus.fit_to_pgmq()
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_read regprocedure := 'nexus.read_snapshots(text, integer, integer, uuid, bigint)'::regprocedure;
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
