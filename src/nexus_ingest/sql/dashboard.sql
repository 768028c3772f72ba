-- The dashboard's read queries, named. Loaded by `nexus_ingest.queries` with queries.sql.
-- Parameters are psycopg's %(name)s placeholders. The dashboard only reads: its actions
-- (replay, purge) go through queue.py's dead-letter functions.

-- name: dashboard_throughput
-- Per-minute counts over the last hour: snapshots received, extractions recorded, and messages
-- dead-lettered (waiting or already replayed). Handled messages are deleted by default, so a
-- snapshot counts as received wherever a trace of it is left: the queue, its archive, the
-- extraction history, the message events (superseded, retried, dead-lettered) or the
-- dead-letter queue. It counts once, at the earliest time known: the traces of one message id
-- are one, and so are a dead letter's original and its replay (one session, one number). A
-- message traced in the hour may have been received before it (retried, held back by the
-- extraction policy, dead-lettered or replayed late): its traces from before date it, and it
-- is not counted. The hour's start is written out wherever it bounds a table: a value the
-- planner can see (now() is evaluated for estimates) instead of a join to a one-row CTE, whose
-- bound it guesses at a third of the table and so reads the archive whole by hash join.
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - interval '59 minutes',
                           date_trunc('minute', now()), interval '1 minute') AS minute
),
extractions AS (
    SELECT e.msg_id, e.session_id, e.seq, e.enqueued_at, e.created_at
    FROM public.prospect_extractions e
    WHERE e.created_at >= (date_trunc('minute', now()) - interval '59 minutes')
),
-- A row archived before the hour was enqueued before it too: `archived_at`, indexed, bounds the
-- archives' scans to the hour (see 024).
dead_letters AS (
    SELECT d.message, d.headers, d.enqueued_at
    FROM pgmq.q_nexus_prospect_ingestion_dlq d
    WHERE d.enqueued_at >= (date_trunc('minute', now()) - interval '59 minutes')
    UNION ALL
    SELECT d.message, d.headers, d.enqueued_at
    FROM pgmq.a_nexus_prospect_ingestion_dlq d
    WHERE d.archived_at >= (date_trunc('minute', now()) - interval '59 minutes')
      AND d.enqueued_at >= (date_trunc('minute', now()) - interval '59 minutes')
),
traces AS (
    SELECT q.msg_id, q.headers ->> 'x-pgmq-group' AS session_id, q.message ->> 'seq' AS seq,
           q.enqueued_at AS at
    FROM pgmq.q_nexus_prospect_ingestion q
    WHERE q.enqueued_at >= (date_trunc('minute', now()) - interval '59 minutes')
    UNION ALL
    SELECT a.msg_id, a.headers ->> 'x-pgmq-group', a.message ->> 'seq', a.enqueued_at
    FROM pgmq.a_nexus_prospect_ingestion a
    WHERE a.archived_at >= (date_trunc('minute', now()) - interval '59 minutes')
      AND a.enqueued_at >= (date_trunc('minute', now()) - interval '59 minutes')
    UNION ALL
    SELECT x.msg_id, x.session_id, x.seq::text, COALESCE(x.enqueued_at, x.created_at)
    FROM extractions x
    WHERE x.msg_id IS NOT NULL
    UNION ALL
    SELECT m.msg_id, m.session_id, NULL, m.at
    FROM nexus.message_events m
    WHERE m.at >= (date_trunc('minute', now()) - interval '59 minutes')
    UNION ALL
    SELECT (d.message ->> 'originalMsgId')::bigint, d.headers ->> 'x-pgmq-group',
           d.message -> 'original' ->> 'seq', d.enqueued_at
    FROM dead_letters d
    WHERE (d.message ->> 'originalMsgId') ~ '^[0-9]{1,18}$'
),
traced AS MATERIALIZED (
    SELECT DISTINCT t.msg_id FROM traces t
),
-- The traces from before the hour of the messages traced in it, looked up by message id (each
-- of these tables is indexed on it; the dead letters on the id they hold, as text, see 024).
earlier AS (
    SELECT q.msg_id, q.enqueued_at AS at
    FROM traced t
    JOIN pgmq.q_nexus_prospect_ingestion q ON q.msg_id = t.msg_id
    WHERE q.enqueued_at < (date_trunc('minute', now()) - interval '59 minutes')
    UNION ALL
    SELECT a.msg_id, a.enqueued_at
    FROM traced t
    JOIN pgmq.a_nexus_prospect_ingestion a ON a.msg_id = t.msg_id
    WHERE a.enqueued_at < (date_trunc('minute', now()) - interval '59 minutes')
    UNION ALL
    SELECT e.msg_id, COALESCE(e.enqueued_at, e.created_at)
    FROM traced t
    JOIN public.prospect_extractions e ON e.msg_id = t.msg_id
    WHERE COALESCE(e.enqueued_at, e.created_at)
          < (date_trunc('minute', now()) - interval '59 minutes')
    UNION ALL
    SELECT m.msg_id, m.at
    FROM traced t
    JOIN nexus.message_events m ON m.msg_id = t.msg_id
    WHERE m.at < (date_trunc('minute', now()) - interval '59 minutes')
    UNION ALL
    SELECT t.msg_id, d.enqueued_at
    FROM traced t
    JOIN pgmq.q_nexus_prospect_ingestion_dlq d ON d.message ->> 'originalMsgId' = t.msg_id::text
    WHERE d.enqueued_at < (date_trunc('minute', now()) - interval '59 minutes')
    UNION ALL
    SELECT t.msg_id, d.enqueued_at
    FROM traced t
    JOIN pgmq.a_nexus_prospect_ingestion_dlq d ON d.message ->> 'originalMsgId' = t.msg_id::text
    WHERE d.enqueued_at < (date_trunc('minute', now()) - interval '59 minutes')
),
messages AS (
    SELECT t.msg_id, max(t.session_id) AS session_id, max(t.seq) AS seq, min(t.at) AS at
    FROM (
        SELECT t.msg_id, t.session_id, t.seq, t.at FROM traces t
        UNION ALL
        SELECT e.msg_id, NULL, NULL, e.at FROM earlier e
    ) t
    GROUP BY t.msg_id
),
-- A replay is its dead letter's snapshot: one dead-lettered before the hour dates it too. The
-- dead letters are looked up by session (indexed, see 024), not read whole.
snapshot_keys AS MATERIALIZED (
    SELECT CASE WHEN m.session_id IS NOT NULL AND m.seq ~ '^[0-9]{1,9}$'
                THEN ARRAY[m.session_id, m.seq]
                ELSE ARRAY['', m.msg_id::text] END AS key,
           m.at
    FROM messages m
),
snapshots AS (
    SELECT min(k.at) AS at
    FROM (
        SELECT k.key, k.at FROM snapshot_keys k
        UNION ALL
        SELECT k.key, d.enqueued_at
        FROM snapshot_keys k
        JOIN pgmq.q_nexus_prospect_ingestion_dlq d
            ON d.headers ->> 'x-pgmq-group' = k.key[1]
           AND d.message -> 'original' ->> 'seq' = k.key[2]
        WHERE d.enqueued_at < (date_trunc('minute', now()) - interval '59 minutes')
        UNION ALL
        SELECT k.key, d.enqueued_at
        FROM snapshot_keys k
        JOIN pgmq.a_nexus_prospect_ingestion_dlq d
            ON d.headers ->> 'x-pgmq-group' = k.key[1]
           AND d.message -> 'original' ->> 'seq' = k.key[2]
        WHERE d.enqueued_at < (date_trunc('minute', now()) - interval '59 minutes')
    ) k
    GROUP BY k.key
),
received AS (
    SELECT date_trunc('minute', s.at) AS minute, count(*) AS n
    FROM snapshots s
    GROUP BY 1
),
extracted AS (
    SELECT date_trunc('minute', x.created_at) AS minute, count(*) AS n
    FROM extractions x
    GROUP BY 1
),
dead AS (
    SELECT date_trunc('minute', d.enqueued_at) AS minute, count(*) AS n
    FROM dead_letters d
    GROUP BY 1
)
SELECT m.minute,
       COALESCE(r.n, 0)::integer AS received,
       COALESCE(x.n, 0)::integer AS extracted,
       COALESCE(d.n, 0)::integer AS dead_lettered
FROM minutes m
LEFT JOIN received r ON r.minute = m.minute
LEFT JOIN extracted x ON x.minute = m.minute
LEFT JOIN dead d ON d.minute = m.minute
ORDER BY m.minute;

-- name: dashboard_totals
-- How many prospects there are: counted up to `exact_up_to`, beyond that the planner's estimate
-- (its row density, kept by autovacuum's ANALYZE, times the table's pages now), never less
-- than the count. Counting them all read the whole table on every poll of the overview (every
-- 5 s): 0.3 s a million rows, and a magnitude is all the card needs.
WITH counted AS (
    SELECT count(*) AS n
    FROM (SELECT 1 FROM public.prospect_data LIMIT %(exact_up_to)s) p
),
estimated AS (
    SELECT CASE WHEN c.reltuples > 0 AND c.relpages > 0
                THEN c.reltuples / c.relpages
                     * (pg_catalog.pg_relation_size(c.oid)
                        / pg_catalog.current_setting('block_size')::integer)
           END AS n
    FROM pg_catalog.pg_class c
    WHERE c.oid = 'public.prospect_data'::regclass
)
SELECT CASE WHEN c.n < %(exact_up_to)s THEN c.n
            ELSE GREATEST(c.n, COALESCE(e.n, 0))::bigint END AS prospects,
       c.n >= %(exact_up_to)s AS prospects_estimated
FROM counted c, estimated e;

-- name: dashboard_prospects
-- `pattern` is an escaped ILIKE pattern (or NULL for no search); `sort` is one of
-- interest, recent, name (anything else sorts by recent). By interest and by recent, the first
-- page is read off an index (005, 024); by name, and a search, read the table (024 says why).
SELECT p.fingerprint_id, p.session_id, p.nombre, p.email, p.telefono, p.empresa,
       p.productos_interes, p.nivel_interes, p.intencion, p.idioma,
       p.extraction_count, p.updated_at
FROM public.prospect_data p
WHERE (%(intent)s::text IS NULL OR p.intencion = %(intent)s::text)
  AND (%(pattern)s::text IS NULL
       OR concat_ws(' ', p.nombre, p.email, p.telefono, p.empresa, p.cargo, p.ubicacion,
                    p.fingerprint_id, p.session_id, array_to_string(p.productos_interes, ' '))
          ILIKE %(pattern)s::text)
ORDER BY
    CASE WHEN %(sort)s::text = 'interest' THEN p.nivel_interes END DESC NULLS LAST,
    CASE WHEN %(sort)s::text = 'name' THEN lower(p.nombre) END ASC NULLS LAST,
    p.updated_at DESC,
    p.id DESC
LIMIT %(limit)s;

-- name: dashboard_extractions
SELECT e.id, e.msg_id, e.session_id, e.seq, e.outcome, e.extractor, e.model,
       e.input_tokens, e.output_tokens, e.cached_tokens, e.cache_write_tokens, e.batch,
       e.cost_usd::float8 AS cost_usd, e.latency_ms, e.result, e.created_at
FROM public.prospect_extractions e
WHERE e.fingerprint_id = %(fingerprint_id)s
ORDER BY e.created_at DESC, e.id DESC
LIMIT %(limit)s;

-- name: dashboard_sessions
-- Every session of a visitor, least recently active first: those the producer numbered and
-- those only the extraction history knows.
SELECT x.session_id
FROM (
    SELECT s.session_id, s.updated_at AS at
    FROM nexus.sessions s WHERE s.fingerprint_id = %(fingerprint_id)s
    UNION ALL
    SELECT e.session_id, e.created_at
    FROM public.prospect_extractions e WHERE e.fingerprint_id = %(fingerprint_id)s
) x
GROUP BY x.session_id
ORDER BY max(x.at), x.session_id;

-- name: dashboard_trace
-- Where each message of the given sessions is now: queued, archived, or dead-lettered
-- (a replayed dead letter stays in the dead-letter archive). Never the conversation text.
SELECT t.place, t.msg_id, t.session_id,
       CASE WHEN (t.body ->> 'seq') ~ '^[0-9]{1,9}$' THEN (t.body ->> 'seq')::integer END AS seq,
       CASE WHEN jsonb_typeof(t.body -> 'messages') = 'array'
            THEN jsonb_array_length(t.body -> 'messages') END AS turns,
       t.read_ct, t.enqueued_at, t.settled_at, t.error
FROM (
    SELECT 'queued' AS place, q.msg_id, q.headers ->> 'x-pgmq-group' AS session_id,
           q.message AS body, q.read_ct, q.enqueued_at,
           NULL::timestamptz AS settled_at, NULL::text AS error
    FROM pgmq.q_nexus_prospect_ingestion q
    WHERE q.headers ->> 'x-pgmq-group' = ANY(%(session_ids)s::text[])
    UNION ALL
    SELECT 'archived', a.msg_id, a.headers ->> 'x-pgmq-group', a.message, a.read_ct,
           a.enqueued_at, a.archived_at, NULL
    FROM pgmq.a_nexus_prospect_ingestion a
    WHERE a.headers ->> 'x-pgmq-group' = ANY(%(session_ids)s::text[])
    UNION ALL
    SELECT 'dead letter', d.msg_id, d.headers ->> 'x-pgmq-group', d.message -> 'original',
           d.read_ct, d.enqueued_at, NULL, d.message -> 'error' ->> 'reason'
    FROM pgmq.q_nexus_prospect_ingestion_dlq d
    WHERE d.headers ->> 'x-pgmq-group' = ANY(%(session_ids)s::text[])
    UNION ALL
    SELECT 'replayed dead letter', d.msg_id, d.headers ->> 'x-pgmq-group', d.message -> 'original',
           d.read_ct, d.enqueued_at, d.archived_at, d.message -> 'error' ->> 'reason'
    FROM pgmq.a_nexus_prospect_ingestion_dlq d
    WHERE d.headers ->> 'x-pgmq-group' = ANY(%(session_ids)s::text[])
) t
ORDER BY t.enqueued_at, t.msg_id
LIMIT %(limit)s;

-- name: dashboard_timelines
-- `trace_timeline` (queries.sql) for several sessions in one statement, each row with its
-- session: the work queue holds no index by session (see 024), so each statement reads its
-- backlog once, and a page of ten sessions read it ten times.
SELECT headers ->> 'x-pgmq-group' AS session_id, enqueued_at AS at, msg_id, 'enqueued' AS event,
       jsonb_build_object('seq', message -> 'seq', 'place', 'queue', 'reads', read_ct) AS detail
FROM pgmq.q_nexus_prospect_ingestion WHERE headers ->> 'x-pgmq-group' = ANY(%(session_ids)s::text[])
UNION ALL
SELECT headers ->> 'x-pgmq-group', enqueued_at, msg_id, 'enqueued',
       jsonb_build_object('seq', message -> 'seq', 'reads', read_ct)
FROM pgmq.a_nexus_prospect_ingestion WHERE headers ->> 'x-pgmq-group' = ANY(%(session_ids)s::text[])
UNION ALL
SELECT headers ->> 'x-pgmq-group', archived_at, msg_id, 'archived', '{}'::jsonb
FROM pgmq.a_nexus_prospect_ingestion WHERE headers ->> 'x-pgmq-group' = ANY(%(session_ids)s::text[])
UNION ALL
SELECT e.session_id, e.enqueued_at, e.msg_id, 'enqueued', jsonb_build_object('seq', e.seq)
FROM public.prospect_extractions e
WHERE e.session_id = ANY(%(session_ids)s::text[]) AND e.enqueued_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM pgmq.a_nexus_prospect_ingestion a WHERE a.msg_id = e.msg_id)
UNION ALL
SELECT session_id, created_at, msg_id, CASE outcome WHEN 'applied' THEN 'saved' ELSE 'stale' END,
       jsonb_build_object('seq', seq, 'extractor', extractor, 'model', model, 'input_tokens', input_tokens,
                          'output_tokens', output_tokens, 'cached_tokens', cached_tokens,
                          'cache_write_tokens', NULLIF(cache_write_tokens, 0),
                          'batch', NULLIF(batch, false), 'cost_usd', cost_usd, 'latency_ms', latency_ms)
FROM public.prospect_extractions WHERE session_id = ANY(%(session_ids)s::text[])
UNION ALL
SELECT session_id, at, msg_id, event, detail || jsonb_build_object('attempt', attempt)
FROM nexus.message_events WHERE session_id = ANY(%(session_ids)s::text[])
UNION ALL
-- A letter written by hand may carry any `originalMsgId`: only digits are cast.
SELECT headers ->> 'x-pgmq-group', enqueued_at,
       CASE WHEN message ->> 'originalMsgId' ~ '^[0-9]{1,18}$'
            THEN (message ->> 'originalMsgId')::bigint END,
       'in_dead_letter_queue',
       jsonb_build_object('dead_letter_id', msg_id, 'kind', message -> 'error' -> 'kind',
                          'attempts', message -> 'error' -> 'attempts')
FROM pgmq.q_nexus_prospect_ingestion_dlq WHERE headers ->> 'x-pgmq-group' = ANY(%(session_ids)s::text[])
ORDER BY 1, 2, 3;
