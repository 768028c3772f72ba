-- Nexus on Supabase, driven by pg_cron: for the "cron → HTTP consumer" deployment style and for
-- the nightly retention job. Run it in the SQL editor (or psql) after the migrations; running it
-- again replaces the jobs. See docs/SUPABASE.md.
--
-- Why not the seed's schedule: `*/10 * * * *` is classic five-field cron, whose first field is
-- the MINUTE, so it fires every 10 minutes, not every 10 seconds. pg_cron takes sub-minute
-- intervals as '1 seconds' .. '59 seconds' since version 1.5 (Supabase ships 1.6); older pg_cron
-- rejects them ("invalid schedule"), which is why this file checks the version first.
--
-- Why not the seed's bearer: the anon key is public (every visitor's browser has it), so anyone
-- could trigger the consumer with it. Nexus's consumer endpoint accepts only the value of
-- NEXUS_CONSUMER_TOKEN, kept here in Supabase Vault rather than in the job's text.

create extension if not exists pg_cron;
create extension if not exists pg_net;

DO $$
BEGIN
    IF pg_catalog.string_to_array(
           pg_catalog.substring((SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'),
                                '^[0-9.]*[0-9]'), '.')::integer[] < ARRAY[1, 5] THEN
        RAISE EXCEPTION 'the 10-second schedule needs pg_cron 1.5 or newer'
            USING HINT = 'ALTER EXTENSION pg_cron UPDATE; or run `nexus worker` instead of this job.';
    END IF;
END
$$;

-- Once, with your values (Dashboard → Project Settings → Vault shows and edits them later):
--   select vault.create_secret('https://nexus.example.com/api/nexus/consumer', 'nexus_consumer_url');
--   select vault.create_secret('<the NEXUS_CONSUMER_TOKEN of your Nexus service>', 'nexus_consumer_token');
-- The URL is wherever `nexus serve` (or `nexus up`) answers; `/functions/v1/nexus-consumer` works too.

-- Every 10 seconds: ask the consumer to process what is queued (one batch per call).
SELECT cron.schedule(
    'nexus-consumer-processor',
    '10 seconds',
    $job$
    SELECT net.http_post(
        url := (SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = 'nexus_consumer_url'),
        headers := jsonb_build_object(
            'Content-Type', 'application/json',
            'Authorization', 'Bearer ' || (
                SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = 'nexus_consumer_token')),
        body := '{}'::jsonb,
        timeout_milliseconds := 30000  -- overlapping calls are safe: sessions are leased
    ) AS request_id;
    $job$
);

-- Nightly retention (migration 007 schedules the same job when pg_cron is already there; this
-- covers enabling pg_cron later). Change the periods here: archived messages 7 days, dead
-- letters 30 days, extraction history, message events and idle sessions 90 days, idempotency
-- keys 24 hours.
SELECT cron.schedule(
    'nexus-maintenance',
    '17 3 * * *',
    'SELECT nexus.run_maintenance(p_archive_days => 7, p_history_days => 90, p_idempotency_hours => 24, p_dead_letter_days => 30)'
);

-- A job every 10 seconds adds 8,640 rows a day to cron.job_run_details: keep a week of them.
SELECT cron.schedule(
    'nexus-cron-history',
    '47 3 * * *',
    $job$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '7 days'$job$
);

-- Check:
--   SELECT jobname, schedule, active FROM cron.job WHERE jobname LIKE 'nexus-%';
--   SELECT status, return_message, start_time FROM cron.job_run_details ORDER BY start_time DESC LIMIT 10;
--   SELECT status_code, content FROM net._http_response ORDER BY created DESC LIMIT 5;
