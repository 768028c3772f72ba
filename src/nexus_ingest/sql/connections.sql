-- What Nexus asks of, and sets on, the sessions it opens (nexus_ingest.db, nexus_ingest.migrate),
-- whatever the database's or role's own defaults (ALTER DATABASE/ROLE ... SET) say.

-- name: readable_dates
-- psycopg reads timestamps only in DateStyle ISO and intervals only in IntervalStyle postgres;
-- in any other style (a DBA's `ALTER DATABASE ... SET DateStyle = 'SQL, DMY'`) every row with a
-- date fails to load. Only the format of text changes: no stored value or comparison does.
SET DateStyle = 'ISO';
SET IntervalStyle = 'postgres';

-- name: database_traits
-- What decides whether Nexus can use a database at all (see db.check_usable), in one round trip.
SELECT pg_catalog.getdatabaseencoding(),
       pg_catalog.current_setting('transaction_read_only')::boolean OR pg_catalog.pg_is_in_recovery(),
       pg_catalog.pg_backend_pid();

-- name: backend_pid
SELECT pg_catalog.pg_backend_pid();

-- name: migrator_session
-- Waiting for another migrator, or building an index over a populated table, may take far
-- longer than a limit a DBA set for the application's queries. Each migration is one
-- transaction, so there is nothing half-done to guard against.
SET statement_timeout = 0;

-- name: wait_without_lock_timeout
-- Waiting for another migrator is not a lock a DBA's lock_timeout is meant for; it lasts as
-- long as that migrator runs.
SET lock_timeout = 0;

-- name: restore_lock_timeout
-- Back to the database's or role's own value for the migrations' DDL.
RESET lock_timeout;

-- name: migrator_lacks
-- What the migrating role lacks of what the migrations need, in the server's own words, checked
-- before any of them runs (so a role that may not finish does not start): creating schemas (the
-- ledger, PGMQ), creating in `public` (PostgreSQL 15 grants it to the database's owner only),
-- and creating the roles that migration 003 creates where missing.
SELECT pg_catalog.array_remove(ARRAY[
    CASE WHEN NOT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')
         THEN pg_catalog.format('permission denied for database %s', pg_catalog.current_database()) END,
    CASE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'public') THEN NULL
         WHEN NOT pg_catalog.has_schema_privilege('public', 'CREATE')
         THEN 'permission denied for schema public' END,
    CASE WHEN NOT EXISTS (
              SELECT 1 FROM pg_catalog.unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r(name)
              WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles p WHERE p.rolname = r.name)) THEN NULL
         WHEN NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_roles p
              WHERE p.rolname = current_user AND (p.rolsuper OR p.rolcreaterole))
         THEN 'permission denied to create role' END
], NULL);
