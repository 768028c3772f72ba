-- Every query Nexus runs at run time, named. Loaded by `nexus_ingest.queries`.
-- Parameters are psycopg's %(name)s placeholders.

-- name: enqueue_snapshots
SELECT idx, msg_id, seq, duplicate, conflict, session_taken
FROM nexus.enqueue_snapshots(%(queue)s::text, %(items)s::jsonb);

-- name: queue_metrics
SELECT queue_name, queue_length, oldest_msg_age_sec, newest_msg_age_sec, total_messages
FROM public.pgmq_metrics(%(queue)s);

-- name: read_snapshots
-- FIFO within each session, and never a session that another worker holds (see 006, 010);
-- only ids above %(after)s (see 016).
SELECT msg_id, read_ct, enqueued_at, message, headers, last_seq, ready_from
FROM nexus.read_snapshots(%(queue)s::text, %(vt)s::integer, %(qty)s::integer, %(token)s::uuid,
                          %(after)s::bigint);

-- name: release_sessions
SELECT nexus.release_sessions(%(session_ids)s::text[], %(token)s::uuid);

-- name: next_visible
-- When the next message can be read: its visibility timeout over and its session not held by a
-- worker (a long LLM call, or a crashed worker until its lease runs out). Counting only the
-- timeout, a worker idle beside a held session's newer snapshot read every few milliseconds
-- until the lease ended. The earliest hundred by timeout are weighed; should all of them wait
-- for leases, a later one may be readable sooner, and the worker's poll interval bounds that.
SELECT EXTRACT(epoch FROM (min(GREATEST(q.vt, s.leased_until)) - clock_timestamp()))
FROM (
    SELECT q.vt, q.headers ->> 'x-pgmq-group' AS session_id
    FROM pgmq.q_nexus_prospect_ingestion q
    ORDER BY q.vt
    LIMIT 100
) q
LEFT JOIN nexus.sessions s
    ON s.session_id = q.session_id AND s.leased_until > clock_timestamp();

-- name: delete_messages
SELECT pgmq.delete(%(queue)s::text, %(msg_ids)s::bigint[]);

-- name: archive_messages
-- A forgotten visitor's are deleted instead (020).
SELECT nexus.archive_messages(%(queue)s::text, %(msg_ids)s::bigint[]);

-- name: set_visibility
SELECT msg_id FROM pgmq.set_vt(%(queue)s::text, %(msg_id)s::bigint, %(delay)s::integer);

-- name: session_progress
-- What the extraction policy weighs for each session (see worker/pace.py), and the
-- database's time to weigh it at: the producer's clock stamped the snapshots.
SELECT i.session_id, s.created_at, s.extracted_at, s.extracted_turns, clock_timestamp() AS now
FROM unnest(%(session_ids)s::text[]) AS i(session_id)
LEFT JOIN nexus.sessions s ON s.session_id = i.session_id;

-- name: defer_messages
-- Hide messages until the extraction policy's time for them, giving back the read that found
-- them: a deferral is no failed attempt, so it must not bring a message nearer to the
-- dead-letter queue (see worker/plan.py). No time: readable now, by the database's clock (what a
-- stopping worker took but could not finish).
UPDATE pgmq.q_nexus_prospect_ingestion q
SET vt = COALESCE(d.until, clock_timestamp()), read_ct = GREATEST(q.read_ct - 1, 0)
FROM unnest(%(msg_ids)s::bigint[], %(until)s::timestamptz[]) AS d(msg_id, until)
WHERE q.msg_id = d.msg_id;

-- name: queued_messages
-- Messages by id, as a read returns them but without reading them (no read is counted).
SELECT msg_id, read_ct, enqueued_at, message, headers
FROM pgmq.q_nexus_prospect_ingestion
WHERE msg_id = ANY(%(msg_ids)s::bigint[]);

-- name: record_llm_batch
-- A submitted Message Batch, kept until its results are saved (see worker/batches.py). Its
-- messages stay hidden twice as long as the claim lasts, so that another worker takes the
-- batch over before they could be read and paid for again.
WITH recorded AS (
    INSERT INTO nexus.llm_batches (batch_id, msg_ids, owner, claimed_until)
    VALUES (%(batch_id)s, %(msg_ids)s::bigint[], %(owner)s::uuid,
            clock_timestamp() + make_interval(secs => %(claim_s)s))
    ON CONFLICT (batch_id) DO NOTHING
)
UPDATE pgmq.q_nexus_prospect_ingestion q
SET vt = GREATEST(q.vt, clock_timestamp() + make_interval(secs => 2 * %(claim_s)s))
WHERE q.msg_id = ANY(%(msg_ids)s::bigint[]);

-- name: reserve_for_llm_batch
-- Messages about to be sent in a Message Batch, hidden as long as a recorded batch keeps them
-- (see record_llm_batch) before the upload starts, by this clock: the upload may outlast the
-- lease of the read that found them. Only those not read again since (their read count
-- unmoved) are kept and returned: another read's are its own, and sending them too would pay
-- for them twice.
UPDATE pgmq.q_nexus_prospect_ingestion q
SET vt = GREATEST(q.vt, clock_timestamp() + make_interval(secs => 2 * %(claim_s)s))
FROM unnest(%(msg_ids)s::bigint[], %(read_cts)s::integer[]) AS r(msg_id, read_ct)
WHERE q.msg_id = r.msg_id AND q.read_ct = r.read_ct
RETURNING q.msg_id, q.read_ct;

-- name: claim_llm_batches
-- The batches this worker polls now: its own, and any whose claim ran out (its worker
-- stopped). Their messages are hidden for longer again.
WITH claimed AS (
    UPDATE nexus.llm_batches b
    SET owner = %(owner)s::uuid,
        claimed_until = clock_timestamp() + make_interval(secs => %(claim_s)s)
    WHERE b.owner = %(owner)s::uuid OR b.claimed_until <= clock_timestamp()
    RETURNING b.batch_id, b.msg_ids, b.submitted_at
),
hidden AS (
    UPDATE pgmq.q_nexus_prospect_ingestion q
    SET vt = GREATEST(q.vt, clock_timestamp() + make_interval(secs => 2 * %(claim_s)s))
    FROM claimed c
    WHERE q.msg_id = ANY(c.msg_ids)
)
SELECT batch_id, msg_ids, submitted_at FROM claimed ORDER BY submitted_at;

-- name: release_llm_batches
-- A stopping worker lets any other take its batches over at once.
UPDATE nexus.llm_batches
SET owner = NULL, claimed_until = clock_timestamp()
WHERE owner = %(owner)s::uuid;

-- name: forget_llm_batch
DELETE FROM nexus.llm_batches WHERE batch_id = %(batch_id)s;

-- name: lose_llm_batch
-- A batch the API no longer knows (expired, deleted): forgotten, and its messages readable at
-- once instead of hidden for the rest of their claim.
WITH lost AS (
    DELETE FROM nexus.llm_batches WHERE batch_id = %(batch_id)s RETURNING msg_ids
)
UPDATE pgmq.q_nexus_prospect_ingestion q
SET vt = clock_timestamp()
FROM lost
WHERE q.msg_id = ANY(lost.msg_ids);

-- name: llm_spend
-- What LLM extractions cost, per model and either per day (UTC) over the last `days` days, or,
-- for one visitor (`fingerprint_id`), per session: tokens billed by kind (plain input, cache
-- writes, cache reads, output) and the money they took at the prices configured when each was
-- saved. `unpriced` counts extractions of a model without a price, whose cost is unknown.
SELECT CASE WHEN %(fingerprint_id)s::text IS NULL
            THEN (e.created_at AT TIME ZONE 'UTC')::date END AS day,
       CASE WHEN %(fingerprint_id)s::text IS NOT NULL THEN e.session_id END AS session_id,
       e.model,
       count(*)::integer AS extractions,
       count(*) FILTER (WHERE e.batch)::integer AS batched,
       sum(GREATEST(e.input_tokens - e.cached_tokens - e.cache_write_tokens, 0))::bigint AS input,
       sum(e.cache_write_tokens)::bigint AS cache_write,
       sum(e.cached_tokens)::bigint AS cache_read,
       sum(e.output_tokens)::bigint AS output,
       COALESCE(sum(e.cost_usd), 0)::float8 AS cost_usd,
       count(*) FILTER (WHERE e.cost_usd IS NULL)::integer AS unpriced
FROM public.prospect_extractions e
WHERE e.model IS NOT NULL
  AND (%(fingerprint_id)s::text IS NULL OR e.fingerprint_id = %(fingerprint_id)s::text)
  AND e.created_at >= (date_trunc('day', now() AT TIME ZONE 'UTC')
                       - make_interval(days => %(days)s::integer - 1)) AT TIME ZONE 'UTC'
GROUP BY 1, 2, 3
ORDER BY 1 DESC, min(e.created_at), 2, 3;

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

-- name: hold_off_forgets
-- The lock every save takes (012), taken first by a settlement that needs it (to record an
-- event, dead-letter, archive) after locking rows of the queue or the sessions. Taken after
-- those rows, it waits for a forget that holds it and waits for those rows in turn: a
-- deadlock, which Postgres ends after a second by failing the forget or the settlement.
LOCK TABLE nexus.forgotten IN ROW SHARE MODE;

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
    WHERE message ->> 'originalMsgId' = %(msg_id)s::text
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
                          'output_tokens', output_tokens, 'cached_tokens', cached_tokens,
                          'cache_write_tokens', NULLIF(cache_write_tokens, 0),
                          'batch', NULLIF(batch, false), 'cost_usd', cost_usd, 'latency_ms', latency_ms)
FROM public.prospect_extractions WHERE session_id = %(session_id)s
UNION ALL
SELECT at, msg_id, event, detail || jsonb_build_object('attempt', attempt)
FROM nexus.message_events WHERE session_id = %(session_id)s
UNION ALL
-- A letter written by hand may carry any `originalMsgId`: only digits are cast.
SELECT enqueued_at,
       CASE WHEN message ->> 'originalMsgId' ~ '^[0-9]{1,18}$'
            THEN (message ->> 'originalMsgId')::bigint END,
       'in_dead_letter_queue',
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
FROM pgmq.q_nexus_prospect_ingestion_dlq WHERE message ->> 'originalMsgId' = %(msg_id)s::text
ORDER BY 1, 2;
