-- The seed's five RPC wrappers (Supabase calls them through PostgREST), in schema public.
-- Each accepts the queue's public name (dashes) or PGMQ's stored name (underscores).

CREATE OR REPLACE FUNCTION nexus.stored_queue_name(queue_name text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = ''
AS $$ SELECT replace(queue_name, '-', '_') $$;

CREATE OR REPLACE FUNCTION public.pgmq_send(queue_name text, message jsonb, delay integer DEFAULT 0)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = ''
AS $$ SELECT pgmq.send(nexus.stored_queue_name(queue_name), message, delay) $$;

CREATE OR REPLACE FUNCTION public.pgmq_read(queue_name text, vt integer, qty integer)
RETURNS SETOF pgmq.message_record
LANGUAGE sql SECURITY DEFINER
SET search_path = ''
AS $$ SELECT * FROM pgmq.read(nexus.stored_queue_name(queue_name), vt, qty) $$;

CREATE OR REPLACE FUNCTION public.pgmq_delete(queue_name text, msg_id bigint)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER
SET search_path = ''
AS $$ SELECT pgmq.delete(nexus.stored_queue_name(queue_name), msg_id) $$;

CREATE OR REPLACE FUNCTION public.pgmq_archive(queue_name text, msg_id bigint)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER
SET search_path = ''
AS $$ SELECT pgmq.archive(nexus.stored_queue_name(queue_name), msg_id) $$;

CREATE OR REPLACE FUNCTION public.pgmq_metrics(queue_name text)
RETURNS TABLE (
    queue_name text,
    queue_length bigint,
    oldest_msg_age_sec integer,
    newest_msg_age_sec integer,
    total_messages bigint
)
LANGUAGE sql SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT $1, m.queue_length, m.oldest_msg_age_sec, m.newest_msg_age_sec, m.total_messages
    FROM pgmq.metrics(nexus.stored_queue_name($1)) AS m
$$;

-- Supabase's roles, so the same grants work on a plain Postgres.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END
$$;

-- Browsers (anon, authenticated) may only enqueue; reading conversations is service_role's.
REVOKE ALL ON FUNCTION public.pgmq_send(text, jsonb, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pgmq_read(text, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pgmq_delete(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pgmq_archive(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pgmq_metrics(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pgmq_send(text, jsonb, integer) TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.pgmq_read(text, integer, integer) TO service_role;
GRANT EXECUTE ON FUNCTION public.pgmq_delete(text, bigint) TO service_role;
GRANT EXECUTE ON FUNCTION public.pgmq_archive(text, bigint) TO service_role;
GRANT EXECUTE ON FUNCTION public.pgmq_metrics(text) TO service_role;
