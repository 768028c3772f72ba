-- PGMQ itself: the extension where the server ships it (Supabase, Tembo, self-built).
-- Where it does not, the migrator installs the SQL-only PGMQ bundled with the `pgmq` package
-- before this file runs, and this block finds the schema already there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq')
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq') THEN
        CREATE EXTENSION IF NOT EXISTS pgmq;
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS nexus;
