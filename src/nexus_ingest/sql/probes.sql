-- Named queries of the liveness and readiness probes (nexus_ingest.probes).

-- name: schema_version
-- The newest migration applied; the probe compares it with the package's newest.
SELECT max(version) FROM nexus.schema_migrations;
