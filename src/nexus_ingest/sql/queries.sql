-- Every query Nexus runs at run time, named. Loaded by `nexus_ingest.queries`.
-- Parameters are psycopg's %(name)s placeholders.

-- name: enqueue_snapshots
SELECT idx, msg_id, seq, duplicate, conflict
FROM nexus.enqueue_snapshots(%(queue)s::text, %(items)s::jsonb);

-- name: queue_metrics
SELECT queue_name, queue_length, oldest_msg_age_sec, newest_msg_age_sec, total_messages
FROM public.pgmq_metrics(%(queue)s);

-- name: read_snapshots
-- FIFO within each session, and never a session that another worker holds (see 006, 010).
SELECT msg_id, read_ct, enqueued_at, message, headers, last_seq
FROM nexus.read_snapshots(%(queue)s::text, %(vt)s::integer, %(qty)s::integer, %(token)s::uuid);

-- name: release_sessions
SELECT nexus.release_sessions(%(session_ids)s::text[], %(token)s::uuid);

-- name: next_visible
SELECT EXTRACT(epoch FROM (min(vt) - clock_timestamp()))
FROM pgmq.q_nexus_prospect_ingestion;

-- name: delete_messages
SELECT pgmq.delete(%(queue)s::text, %(msg_ids)s::bigint[]);

-- name: archive_messages
SELECT pgmq.archive(%(queue)s::text, %(msg_ids)s::bigint[]);

-- name: set_visibility
SELECT msg_id FROM pgmq.set_vt(%(queue)s::text, %(msg_id)s::bigint, %(delay)s::integer);

-- name: dead_letter
-- Built from the queued rows themselves, so any body is kept exactly (see 012).
SELECT msg_id, dead_letter_id
FROM nexus.dead_letter(%(queue)s::text, %(dlq)s::text, %(msg_ids)s::bigint[], %(errors)s::jsonb[]);

-- name: save_extractions
-- A whole batch merged, recorded, acknowledged and released in one statement (see 010).
SELECT msg_id, outcome
FROM nexus.save_extractions(%(queue)s::text, %(items)s::jsonb, %(archive)s::boolean);

-- name: prospect_by_fingerprint
SELECT * FROM public.prospect_data WHERE fingerprint_id = %(fingerprint_id)s;

-- name: ping
SELECT 1;

-- name: commit_without_waiting
-- The worker's sessions only: see store.open_pool.
SET synchronous_commit = off;

-- name: dead_letters
SELECT msg_id, read_ct, enqueued_at, message, headers
FROM pgmq.q_nexus_prospect_ingestion_dlq
ORDER BY msg_id
LIMIT %(limit)s;

-- name: dead_letter_count
SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq;

-- name: replay_dead_letters
-- Put dead letters back on the work queue as they were first received, and archive them. A
-- dead letter whose extraction could not be saved carries it back, so the model is not asked
-- again (see models.QueuedSnapshot).
WITH chosen AS (
    DELETE FROM pgmq.q_nexus_prospect_ingestion_dlq d
    WHERE %(all)s::boolean OR d.msg_id = ANY(%(msg_ids)s::bigint[])
    RETURNING d.*
),
archived AS (
    -- The columns every pgmq since 1.5 has (1.10 added last_read_at, left empty here).
    INSERT INTO pgmq.a_nexus_prospect_ingestion_dlq (msg_id, read_ct, enqueued_at, vt, message, headers)
    SELECT msg_id, read_ct, enqueued_at, vt, message, headers FROM chosen
)
SELECT c.msg_id AS dead_letter_id,
       pgmq.send('nexus_prospect_ingestion',
                 (c.message -> 'original')
                     || jsonb_build_object('replayedFrom', c.message -> 'originalMsgId')
                     || CASE WHEN c.message -> 'error' ? 'extraction'
                             THEN jsonb_build_object('keptExtraction', c.message -> 'error' -> 'extraction')
                             ELSE '{}'::jsonb END,
                 c.headers) AS msg_id
FROM chosen c
ORDER BY c.msg_id;

-- name: purge_dead_letters
SELECT pgmq.purge_queue('nexus_prospect_ingestion_dlq');

-- name: forget_prospect
SELECT nexus.forget_prospect(%(fingerprint_id)s::text);

-- name: record_events
INSERT INTO nexus.message_events (msg_id, session_id, event, attempt, detail)
SELECT * FROM unnest(%(msg_ids)s::bigint[], %(session_ids)s::text[], %(events)s::text[],
                     %(attempts)s::integer[], %(details)s::jsonb[]);

-- name: trace_session_of_message
SELECT session_id FROM public.prospect_extractions WHERE msg_id = %(msg_id)s
UNION ALL SELECT session_id FROM nexus.message_events WHERE msg_id = %(msg_id)s
UNION ALL SELECT headers ->> 'x-pgmq-group' FROM pgmq.q_nexus_prospect_ingestion WHERE msg_id = %(msg_id)s
UNION ALL SELECT headers ->> 'x-pgmq-group' FROM pgmq.a_nexus_prospect_ingestion WHERE msg_id = %(msg_id)s
UNION ALL SELECT headers ->> 'x-pgmq-group' FROM pgmq.q_nexus_prospect_ingestion_dlq
    WHERE (message ->> 'originalMsgId')::bigint = %(msg_id)s
LIMIT 1;

-- name: trace_timeline
-- Every recorded moment of a session's messages, oldest first: (at, msg_id, event, detail).
SELECT enqueued_at AS at, msg_id, 'enqueued' AS event,
       jsonb_build_object('seq', message -> 'seq', 'place', 'queue', 'reads', read_ct) AS detail
FROM pgmq.q_nexus_prospect_ingestion WHERE headers ->> 'x-pgmq-group' = %(session_id)s
UNION ALL
SELECT enqueued_at, msg_id, 'enqueued', jsonb_build_object('seq', message -> 'seq', 'reads', read_ct)
FROM pgmq.a_nexus_prospect_ingestion WHERE headers ->> 'x-pgmq-group' = %(session_id)s
UNION ALL
SELECT archived_at, msg_id, 'archived', '{}'::jsonb
FROM pgmq.a_nexus_prospect_ingestion WHERE headers ->> 'x-pgmq-group' = %(session_id)s
UNION ALL
SELECT e.enqueued_at, e.msg_id, 'enqueued', jsonb_build_object('seq', e.seq)
FROM public.prospect_extractions e
WHERE e.session_id = %(session_id)s AND e.enqueued_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM pgmq.a_nexus_prospect_ingestion a WHERE a.msg_id = e.msg_id)
UNION ALL
SELECT created_at, msg_id, CASE outcome WHEN 'applied' THEN 'saved' ELSE 'stale' END,
       jsonb_build_object('seq', seq, 'extractor', extractor, 'model', model, 'input_tokens', input_tokens,
                          'output_tokens', output_tokens, 'cached_tokens', cached_tokens, 'latency_ms', latency_ms)
FROM public.prospect_extractions WHERE session_id = %(session_id)s
UNION ALL
SELECT at, msg_id, event, detail || jsonb_build_object('attempt', attempt)
FROM nexus.message_events WHERE session_id = %(session_id)s
UNION ALL
SELECT enqueued_at, (message ->> 'originalMsgId')::bigint, 'in_dead_letter_queue',
       jsonb_build_object('dead_letter_id', msg_id, 'kind', message -> 'error' -> 'kind',
                          'attempts', message -> 'error' -> 'attempts')
FROM pgmq.q_nexus_prospect_ingestion_dlq WHERE headers ->> 'x-pgmq-group' = %(session_id)s
ORDER BY 1, 2;

-- name: trace_message_timeline
-- One message's recorded moments, found by its id alone (a message put on the queue by hand
-- belongs to no session): (at, msg_id, event, detail).
SELECT enqueued_at AS at, msg_id, 'enqueued' AS event,
       jsonb_build_object('place', 'queue', 'reads', read_ct) AS detail
FROM pgmq.q_nexus_prospect_ingestion WHERE msg_id = %(msg_id)s
UNION ALL
SELECT enqueued_at, msg_id, 'enqueued', jsonb_build_object('reads', read_ct)
FROM pgmq.a_nexus_prospect_ingestion WHERE msg_id = %(msg_id)s
UNION ALL
SELECT archived_at, msg_id, 'archived', '{}'::jsonb
FROM pgmq.a_nexus_prospect_ingestion WHERE msg_id = %(msg_id)s
UNION ALL
SELECT at, msg_id, event, detail || jsonb_build_object('attempt', attempt)
FROM nexus.message_events WHERE msg_id = %(msg_id)s
UNION ALL
SELECT enqueued_at, %(msg_id)s, 'in_dead_letter_queue',
       jsonb_build_object('dead_letter_id', msg_id, 'kind', message -> 'error' -> 'kind',
                          'attempts', message -> 'error' -> 'attempts')
FROM pgmq.q_nexus_prospect_ingestion_dlq WHERE (message ->> 'originalMsgId')::bigint = %(msg_id)s
ORDER BY 1, 2;
