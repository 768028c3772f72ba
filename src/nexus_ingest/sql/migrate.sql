-- What `nexus migrate` runs around the numbered migrations, loaded by name. The Supabase kit
-- (nexus_ingest.supabase) is built from the same blocks, so both paths prepare PGMQ and keep
-- the ledger alike.

-- name: lock_migrations
-- Any constant works; it only keeps two migrators (`nexus migrate`, a kit file) from interleaving.
SELECT pg_catalog.pg_advisory_lock(7304225114);

-- name: try_lock_migrations
SELECT pg_catalog.pg_try_advisory_lock(7304225114);

-- name: migration_lock_holder
-- The backend holding the lock above: a bigint key is held as (classid, objid) = its halves.
-- Advisory locks are per database: migrators of other databases on the server hold the same key.
SELECT pid FROM pg_catalog.pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1
  AND (classid::bigint << 32) | objid::bigint = 7304225114
  AND database = (SELECT d.oid FROM pg_catalog.pg_database d
                  WHERE d.datname = pg_catalog.current_database())
LIMIT 1;

-- name: unlock_migrations
SELECT pg_catalog.pg_advisory_unlock(7304225114);

-- name: create_ledger
-- Which migrations a database has, whoever applied them (`nexus migrate` or the Supabase kit).
CREATE SCHEMA IF NOT EXISTS nexus;
CREATE TABLE IF NOT EXISTS nexus.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT version FROM nexus.schema_migrations;

-- name: record_migration
INSERT INTO nexus.schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: prepare_pgmq
-- PGMQ as the extension wherever the server offers one with message headers (pgmq 1.5 or newer;
-- Supabase offers 1.4.4 and 1.5.1), so its queues show on Supabase's Queues page. An installed
-- pgmq is never dropped or replaced: one older than 1.5 is updated to the newest version its
-- update scripts reach, and whatever else it lacks (insert notifications, `last_read_at`)
-- migration 011 makes up for. With no pgmq anywhere this does nothing: `nexus migrate` then
-- installs the SQL-only PGMQ of the `pgmq` package, and the Supabase kit stops (require_pgmq).
DO $prepare_pgmq$
DECLARE
    v_needed constant integer[] := ARRAY[1, 5];
    v_installed text;
    v_owner text;
    v_target text;
BEGIN
    -- The migrations' lock (see lock_migrations), for as long as this transaction lasts.
    PERFORM pg_catalog.pg_advisory_xact_lock(7304225114);
    SELECT e.extversion, e.extowner::regrole::text INTO v_installed, v_owner
    FROM pg_catalog.pg_extension e WHERE e.extname = 'pgmq';

    IF v_installed IS NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgmq') THEN
        WITH offered AS (
            SELECT v.version,
                   pg_catalog.string_to_array(pg_catalog.substring(v.version, '^[0-9.]*[0-9]'), '.')::integer[] AS key
            FROM pg_catalog.pg_available_extension_versions v
            WHERE v.name = 'pgmq'
        )
        SELECT o.version INTO v_target FROM offered o WHERE o.key >= v_needed ORDER BY o.key DESC LIMIT 1;
        IF v_target IS NOT NULL THEN
            EXECUTE pg_catalog.format('CREATE EXTENSION pgmq VERSION %L', v_target);
        END IF;
    ELSIF pg_catalog.string_to_array(pg_catalog.substring(v_installed, '^[0-9.]*[0-9]'), '.')::integer[] < v_needed THEN
        WITH reachable AS (
            SELECT p.target AS version,
                   pg_catalog.string_to_array(pg_catalog.substring(p.target, '^[0-9.]*[0-9]'), '.')::integer[] AS key
            FROM pg_catalog.pg_extension_update_paths('pgmq') p
            WHERE p.source = v_installed AND p.path IS NOT NULL
        )
        SELECT r.version INTO v_target FROM reachable r WHERE r.key >= v_needed ORDER BY r.key DESC LIMIT 1;
        IF v_target IS NULL THEN
            RAISE EXCEPTION 'Nexus needs pgmq 1.5 or newer (message headers); this database has pgmq %, and the server offers no update to 1.5 or newer', v_installed
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'On Supabase, upgrade the project (Settings, Infrastructure) so that it offers pgmq 1.5.1.';
        END IF;
        BEGIN
            EXECUTE pg_catalog.format('ALTER EXTENSION pgmq UPDATE TO %L', v_target);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'Nexus needs pgmq 1.5 or newer (message headers); this database has pgmq %, and only the extension''s owner (%) may update it', v_installed, v_owner
                USING ERRCODE = 'insufficient_privilege',
                      HINT = pg_catalog.format('Run ALTER EXTENSION pgmq UPDATE TO %L as %s, then migrate again.', v_target, v_owner);
        END;
    END IF;

    -- A SQL-only PGMQ cannot be updated from here; one from before 1.5 is refused.
    IF pg_catalog.to_regtype('pgmq.message_record') IS NOT NULL AND NOT EXISTS (
        SELECT 1
        FROM pg_catalog.pg_type t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
        WHERE t.oid = pg_catalog.to_regtype('pgmq.message_record')
          AND a.attname = 'headers' AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'Nexus needs pgmq 1.5 or newer (message headers); the pgmq in this database has none'
            USING ERRCODE = 'feature_not_supported';
    END IF;
END
$prepare_pgmq$;

-- name: migration_owners
-- Who migrates, who owns what migrating changes (the database; PGMQ, the extension's owner
-- where it is one, else its schema's, null while there is none), and which of the roles that
-- migration 003 creates where missing are missing.
SELECT current_user,
       (SELECT d.datdba::regrole::text FROM pg_catalog.pg_database d
        WHERE d.datname = pg_catalog.current_database()),
       COALESCE(
           (SELECT e.extowner::regrole::text FROM pg_catalog.pg_extension e WHERE e.extname = 'pgmq'),
           (SELECT n.nspowner::regrole::text FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgmq')),
       ARRAY(SELECT r.name
             FROM pg_catalog.unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r(name)
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles p WHERE p.rolname = r.name)
             ORDER BY r.name);

-- name: pgmq_installed
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgmq');

-- name: require_pgmq
-- The kit cannot install the SQL-only PGMQ (it ships in the `pgmq` Python package).
DO $require_pgmq$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgmq') THEN
        RAISE EXCEPTION 'Nexus needs PGMQ, and this server offers no pgmq extension of version 1.5 or newer'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'On Supabase, enable Queues (the pgmq extension); elsewhere run `nexus migrate`, which installs the SQL-only PGMQ.';
    END IF;
END
$require_pgmq$;

-- name: kit_migration
-- Skipped when Nexus's ledger has this migration already (`nexus migrate` came first).
DO $nexus_kit$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(7304225114);
    IF EXISTS (SELECT 1 FROM nexus.schema_migrations WHERE version = {version}) THEN
        RAISE NOTICE 'Nexus migration {label} is applied already; skipped';
        RETURN;
    END IF;
    EXECUTE $nexus_migration$
{sql}
$nexus_migration$;
    INSERT INTO nexus.schema_migrations (version, name, checksum)
    VALUES ({version}, '{name}', '{checksum}');
END
$nexus_kit$;
