-- Least-privilege role of routing-persistence (CONTRACT.md §2: it adds only nullable columns,
-- never updates a column it did not add, and under ROUTING_MISSING_ROW_POLICY=park, the
-- default, never creates a row: it holds the event in its own table until the row exists).
-- With ROUTING_MISSING_ROW_POLICY=create, run grants-create-rows.sql after this file: it adds
-- the INSERT of "ExecutionRecord" rows with only their key columns.
--
-- Run it AFTER `routing-persistence migrate` (the columns must exist), as the tables' owner or a
-- superuser, in the database the service writes, with the service's schema first in search_path:
--
--     psql "postgresql://owner@host/db" -v ON_ERROR_STOP=1 -f deploy/sql/grants.sql
--     psql ... -c "ALTER ROLE routing_persistence PASSWORD '...'"   -- or \password; never here
--
-- Idempotent: run it again after every migration. It first revokes everything the role holds on
-- the tables and the service's schema (table and column privileges, including what
-- grants-create-rows.sql granted), then grants exactly the list below, so a grant removed from
-- this file is also removed from the database. `migrate` itself runs as the owner, not as this
-- role.
--
-- What the role can do, and why:
--   "ExecutionRecord"
--     SELECT  "id", "requestId", "tenantId" and the service's columns: the row lookup, the
--             tenant and version guards, RETURNING, the release's "does the row exist now" and
--             the loaders.
--     UPDATE  the service's columns only.
--     (INSERT only with grants-create-rows.sql.)
--   "Tenant"
--     SELECT  "id" and the service's columns; UPDATE the service's columns only. No INSERT: a
--             policy for an unknown tenant is dead-lettered, never creates the tenant.
--   routing_persistence_version: SELECT (the service may check it runs against a migrated schema).
--   Schema routing_persistence (the service's own): USAGE; on its table held_field
--     SELECT, INSERT, DELETE  hold an event, find the held ones whose row appeared, delete
--             what was released or expired;
--     UPDATE  ("held_at") only because PostgreSQL requires an UPDATE privilege for SELECT ...
--             FOR UPDATE (the release locks the rows it works on); a held row is never updated.
-- Nothing else: no DELETE, TRUNCATE, REFERENCES, TRIGGER, no other column of Projects A and C,
-- no CREATE in any schema.
--
-- Nor what every role inherits through PUBLIC and this one does not need. PostgreSQL has no
-- "deny" for one role: what PUBLIC holds, every role holds, so these are revoked from PUBLIC in
-- this database (a role of another team that needs them gets them granted by name):
--   TEMPORARY on the database (PUBLIC's by default): no temporary tables;
--   CREATE on schema public and on the service's schema (PUBLIC's by default before
--   PostgreSQL 15, and still after pg_upgrade from an older server): no tables, views,
--   sequences, types or functions of its own.
-- PUBLIC keeps CONNECT (other roles log in too), USAGE on the schema and EXECUTE on functions
-- (built-ins the statements call). Other databases of the cluster are not this script's: revoke
-- CONNECT there from PUBLIC if the role must not log in to them.

BEGIN;

-- GRANT and REVOKE lock the tables briefly; never queue live traffic behind them for long.
SET LOCAL lock_timeout = '2s';

DO $grants$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'routing_persistence') THEN
        CREATE ROLE routing_persistence LOGIN;
    END IF;
EXCEPTION
    -- Two operators running this at once: the other one created it; nothing more to do here.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$grants$;

ALTER ROLE routing_persistence WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS;

DO $grants$
BEGIN
    -- Start from nothing on the database and the schema too, then what it needs.
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM routing_persistence', current_database());
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM routing_persistence', current_schema());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO routing_persistence', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO routing_persistence', current_schema());
    -- What PUBLIC would hand it (see the header).
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'public') THEN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    END IF;
END
$grants$;

-- Start from nothing on these tables (this also revokes every column privilege).
REVOKE ALL ON TABLE "ExecutionRecord", "Tenant", routing_persistence_version,
    routing_persistence.held_field FROM routing_persistence;
REVOKE ALL ON SCHEMA routing_persistence FROM routing_persistence;

GRANT SELECT (
    "id", "requestId", "tenantId",
    "routingSnapshot", "routingSnapshotOccurredAt", "routingSnapshotEventId",
    "actualCost", "actualCostOccurredAt", "actualCostEventId"
) ON TABLE "ExecutionRecord" TO routing_persistence;

GRANT UPDATE (
    "routingSnapshot", "routingSnapshotOccurredAt", "routingSnapshotEventId",
    "actualCost", "actualCostOccurredAt", "actualCostEventId"
) ON TABLE "ExecutionRecord" TO routing_persistence;

GRANT SELECT (
    "id", "routingPolicy", "routingPolicyOccurredAt", "routingPolicyEventId"
) ON TABLE "Tenant" TO routing_persistence;

GRANT UPDATE (
    "routingPolicy", "routingPolicyOccurredAt", "routingPolicyEventId"
) ON TABLE "Tenant" TO routing_persistence;

GRANT SELECT ON TABLE routing_persistence_version TO routing_persistence;

GRANT USAGE ON SCHEMA routing_persistence TO routing_persistence;
GRANT SELECT, INSERT, DELETE ON TABLE routing_persistence.held_field TO routing_persistence;
GRANT UPDATE ("held_at") ON TABLE routing_persistence.held_field TO routing_persistence;

COMMIT;
