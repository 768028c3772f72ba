-- Every query Nexus runs at run time, named. Loaded by `nexus_ingest.queries`.
-- Parameters are psycopg's %(name)s placeholders.

-- name: enqueue_snapshot
SELECT msg_id, seq, duplicate, conflict
FROM nexus.enqueue_snapshot(
    %(queue)s, %(session_id)s, %(fingerprint_id)s, %(message)s, %(headers)s,
    %(idempotency_key)s, %(request_hash)s);

-- name: enqueue_snapshots
SELECT idx, msg_id, seq, duplicate, conflict
FROM nexus.enqueue_snapshots(%(queue)s::text, %(items)s::jsonb);

-- name: queue_metrics
SELECT queue_name, queue_length, oldest_msg_age_sec, newest_msg_age_sec, total_messages
FROM public.pgmq_metrics(%(queue)s);

-- name: read_snapshots
-- FIFO within each session, and never a session that another worker holds (see 006).
SELECT msg_id, read_ct, enqueued_at, message, headers
FROM nexus.read_snapshots(%(queue)s::text, %(vt)s::integer, %(qty)s::integer, %(token)s::uuid);

-- name: release_sessions
SELECT nexus.release_sessions(%(session_ids)s::text[], %(token)s::uuid);

-- name: next_visible
SELECT EXTRACT(epoch FROM (min(vt) - clock_timestamp()))
FROM pgmq.q_nexus_prospect_ingestion;

-- name: session_last_seq
SELECT session_id, last_seq
FROM nexus.sessions
WHERE session_id = ANY(%(session_ids)s);

-- name: delete_messages
SELECT pgmq.delete(%(queue)s::text, %(msg_ids)s::bigint[]);

-- name: archive_messages
SELECT pgmq.archive(%(queue)s::text, %(msg_ids)s::bigint[]);

-- name: set_visibility
SELECT msg_id FROM pgmq.set_vt(%(queue)s::text, %(msg_id)s::bigint, %(delay)s::integer);

-- name: send_message
SELECT pgmq.send(%(queue)s::text, %(message)s::jsonb, %(headers)s::jsonb);

-- name: update_prospect_data
SELECT public.update_prospect_data(
    p_fingerprint_id => %(fingerprint_id)s::text,
    p_session_id => %(session_id)s::text,
    p_data => %(data)s::jsonb,
    p_msg_id => %(msg_id)s::bigint,
    p_seq => %(seq)s::integer,
    p_extractor => %(extractor)s::text,
    p_model => %(model)s::text,
    p_input_tokens => %(input_tokens)s::integer,
    p_output_tokens => %(output_tokens)s::integer,
    p_cached_tokens => %(cached_tokens)s::integer,
    p_latency_ms => %(latency_ms)s::real) AS outcome;

-- name: prospect_by_fingerprint
SELECT * FROM public.prospect_data WHERE fingerprint_id = %(fingerprint_id)s;

-- name: ping
SELECT 1;
