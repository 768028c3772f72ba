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
-- is not counted.
WITH bounds AS (
    SELECT date_trunc('minute', now()) - interval '59 minutes' AS since
),
minutes AS (
    SELECT generate_series(b.since, date_trunc('minute', now()), interval '1 minute') AS minute
    FROM bounds b
),
extractions AS (
    SELECT e.msg_id, e.session_id, e.seq, e.enqueued_at, e.created_at
    FROM public.prospect_extractions e, bounds b
    WHERE e.created_at >= b.since
),
dead_letters AS (
    SELECT d.message, d.headers, d.enqueued_at
    FROM pgmq.q_nexus_prospect_ingestion_dlq d, bounds b WHERE d.enqueued_at >= b.since
    UNION ALL
    SELECT d.message, d.headers, d.enqueued_at
    FROM pgmq.a_nexus_prospect_ingestion_dlq d, bounds b WHERE d.enqueued_at >= b.since
),
all_dead_letters AS (
    SELECT d.message, d.headers, d.enqueued_at FROM pgmq.q_nexus_prospect_ingestion_dlq d
    UNION ALL
    SELECT d.message, d.headers, d.enqueued_at FROM pgmq.a_nexus_prospect_ingestion_dlq d
),
traces AS (
    SELECT q.msg_id, q.headers ->> 'x-pgmq-group' AS session_id, q.message ->> 'seq' AS seq,
           q.enqueued_at AS at
    FROM pgmq.q_nexus_prospect_ingestion q, bounds b
    WHERE q.enqueued_at >= b.since
    UNION ALL
    SELECT a.msg_id, a.headers ->> 'x-pgmq-group', a.message ->> 'seq', a.enqueued_at
    FROM pgmq.a_nexus_prospect_ingestion a, bounds b
    WHERE a.enqueued_at >= b.since
    UNION ALL
    SELECT x.msg_id, x.session_id, x.seq::text, COALESCE(x.enqueued_at, x.created_at)
    FROM extractions x
    WHERE x.msg_id IS NOT NULL
    UNION ALL
    SELECT m.msg_id, m.session_id, NULL, m.at
    FROM nexus.message_events m, bounds b
    WHERE m.at >= b.since
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
-- of these tables is indexed on it; the dead-letter queue is small).
earlier AS (
    SELECT q.msg_id, q.enqueued_at AS at
    FROM traced t
    JOIN pgmq.q_nexus_prospect_ingestion q ON q.msg_id = t.msg_id, bounds b
    WHERE q.enqueued_at < b.since
    UNION ALL
    SELECT a.msg_id, a.enqueued_at
    FROM traced t
    JOIN pgmq.a_nexus_prospect_ingestion a ON a.msg_id = t.msg_id, bounds b
    WHERE a.enqueued_at < b.since
    UNION ALL
    SELECT e.msg_id, COALESCE(e.enqueued_at, e.created_at)
    FROM traced t
    JOIN public.prospect_extractions e ON e.msg_id = t.msg_id, bounds b
    WHERE COALESCE(e.enqueued_at, e.created_at) < b.since
    UNION ALL
    SELECT m.msg_id, m.at
    FROM traced t
    JOIN nexus.message_events m ON m.msg_id = t.msg_id, bounds b
    WHERE m.at < b.since
    UNION ALL
    SELECT (d.message ->> 'originalMsgId')::bigint, d.enqueued_at
    FROM all_dead_letters d, bounds b
    WHERE d.enqueued_at < b.since AND (d.message ->> 'originalMsgId') ~ '^[0-9]{1,18}$'
      AND (d.message ->> 'originalMsgId')::bigint IN (SELECT t.msg_id FROM traced t)
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
-- A replay is its dead letter's snapshot: one dead-lettered before the hour dates it too.
snapshot_keys AS (
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
        SELECT ARRAY[d.headers ->> 'x-pgmq-group', d.message -> 'original' ->> 'seq'],
               d.enqueued_at
        FROM all_dead_letters d, bounds b
        WHERE d.enqueued_at < b.since
          AND ARRAY[d.headers ->> 'x-pgmq-group', d.message -> 'original' ->> 'seq']
              IN (SELECT k.key FROM snapshot_keys k)
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
SELECT (SELECT count(*) FROM public.prospect_data)::integer AS prospects,
       (SELECT count(*) FROM public.prospect_extractions)::integer AS extractions,
       (SELECT count(*) FROM nexus.sessions)::integer AS sessions;

-- name: dashboard_prospects
-- `pattern` is an escaped ILIKE pattern (or NULL for no search); `sort` is one of
-- interest, recent, name (anything else sorts by recent).
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
