-- Retention of archives and history (see migrations/007_maintenance.sql). Loaded by name.

-- name: run_maintenance
SELECT nexus.run_maintenance(
    p_archive_days => %(archive_days)s::integer,
    p_history_days => %(history_days)s::integer);

-- name: try_maintenance_lock
-- Held until the transaction ends, so a crashed run can never leave it taken.
SELECT pg_try_advisory_xact_lock(%(key)s::bigint);

-- name: maintenance_scheduled_by_cron
SELECT nexus.maintenance_scheduled_by_cron();
