-- PGMQ itself is in place before this file runs: `nexus migrate` (and the first file of the
-- Supabase kit) create or update the pgmq extension where the server offers one, or install the
-- SQL-only PGMQ bundled with the `pgmq` package; see `prepare_pgmq` in sql/migrate.sql.
CREATE SCHEMA IF NOT EXISTS nexus;
