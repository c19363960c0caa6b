-- Only for ROUTING_MISSING_ROW_POLICY=create (the service creates a missing "ExecutionRecord"
-- row itself, with its key columns): run it after grants.sql, which it completes. Under park,
-- the default, the role needs no INSERT on Project A's table, and does not get one.
--
--     psql "postgresql://owner@host/db" -v ON_ERROR_STOP=1 -f deploy/sql/grants.sql \
--          -f deploy/sql/grants-create-rows.sql
--
-- INSERT "id", "requestId", "tenantId" and the service's columns: a row created by an event gets
-- its key columns from it ("createdAt" and Project A's other columns take their defaults, which
-- needs no privilege). Running grants.sql alone again takes it back.

BEGIN;

SET LOCAL lock_timeout = '2s';

GRANT INSERT (
    "id", "requestId", "tenantId",
    "routingSnapshot", "routingSnapshotOccurredAt", "routingSnapshotEventId",
    "actualCost", "actualCostOccurredAt", "actualCostEventId"
) ON TABLE "ExecutionRecord" TO routing_persistence;

COMMIT;
