"""deploy/sql/grants.sql: logged in as routing_persistence, the consumer's writes work and every
other write or read of Projects A's and C's columns is refused with SQLSTATE 42501."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

from consumer.ops.migrate import upgrade
from consumer.settings import Settings
from tests.conftest import Database
from tests.migration_helpers import create_prisma_tables, in_thread

GRANTS = Path(__file__).resolve().parent.parent / "deploy" / "sql" / "grants.sql"
CREATE_ROWS = GRANTS.with_name("grants-create-rows.sql")
ROLE = "routing_persistence"

# The consumer's snapshot upsert (docs/architecture.md "One batch", step 3): created rows get
# only their key columns; an existing row is updated only in the service's columns, only when the
# tenant matches and the event is newer.
UPSERT_SNAPSHOTS = """
INSERT INTO "ExecutionRecord" AS er
    ("id", "requestId", "tenantId",
     "routingSnapshot", "routingSnapshotOccurredAt", "routingSnapshotEventId")
SELECT u.request_id, u.request_id, u.tenant_id, u.payload::jsonb, u.occurred_at, u.event_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::uuid[])
    AS u(request_id, tenant_id, payload, occurred_at, event_id)
ON CONFLICT ("requestId") DO UPDATE SET
    "routingSnapshot" = EXCLUDED."routingSnapshot",
    "routingSnapshotOccurredAt" = EXCLUDED."routingSnapshotOccurredAt",
    "routingSnapshotEventId" = EXCLUDED."routingSnapshotEventId"
WHERE (er."tenantId" IS NULL OR er."tenantId" = EXCLUDED."tenantId")
  AND (er."routingSnapshotOccurredAt" IS NULL
       OR (er."routingSnapshotOccurredAt", er."routingSnapshotEventId")
          < (EXCLUDED."routingSnapshotOccurredAt", EXCLUDED."routingSnapshotEventId"))
RETURNING er."requestId"
"""

UPDATE_POLICIES = """
UPDATE "Tenant" AS t SET
    "routingPolicy" = u.payload::jsonb,
    "routingPolicyOccurredAt" = u.occurred_at,
    "routingPolicyEventId" = u.event_id
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[])
    AS u(tenant_id, payload, occurred_at, event_id)
WHERE t."id" = u.tenant_id
  AND (t."routingPolicyOccurredAt" IS NULL
       OR (t."routingPolicyOccurredAt", t."routingPolicyEventId") < (u.occurred_at, u.event_id))
RETURNING t."id"
"""

# Every one of these touches something the role must not: each must fail with 42501.
FORBIDDEN = [
    'UPDATE "ExecutionRecord" SET "createdAt" = now()',
    """UPDATE "ExecutionRecord" SET "tenantId" = 'other'""",
    """UPDATE "ExecutionRecord" SET "status" = 'DONE'""",
    """UPDATE "ExecutionRecord" SET "requestId" = 'x' WHERE "id" = 'er-1'""",
    """UPDATE "Tenant" SET "name" = 'renamed'""",
    """UPDATE "Tenant" SET "id" = 'x' WHERE "id" = 't-1'""",
    """INSERT INTO "ExecutionRecord" ("id", "requestId", "createdAt") VALUES ('a', 'a', now())""",
    """INSERT INTO "ExecutionRecord" ("id", "requestId", "status") VALUES ('b', 'b', 'X')""",
    """INSERT INTO "Tenant" ("id", "name") VALUES ('t-new', 'New')""",
    """INSERT INTO "ExecutionRecord" AS er ("id", "requestId", "tenantId")
       VALUES ('er-1', 'req-1', 't-9')
       ON CONFLICT ("requestId") DO UPDATE SET "tenantId" = EXCLUDED."tenantId\"""",
    'SELECT "createdAt" FROM "ExecutionRecord" LIMIT 1',
    'SELECT * FROM "ExecutionRecord" LIMIT 1',
    'SELECT "name" FROM "Tenant" LIMIT 1',
    'SELECT count(*) FROM "Tenant" WHERE "plan" = \'free\'',
    'DELETE FROM "ExecutionRecord"',
    'DELETE FROM "Tenant"',
    'TRUNCATE "ExecutionRecord"',
    'ALTER TABLE "Tenant" ADD COLUMN "x" integer',
    "UPDATE routing_persistence_version SET version_num = 'x'",
    # park (grants.sql alone): no row of Project A is ever created.
    """INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") VALUES ('n', 'n', 't-1')""",
    # The service's own table: rows are held, read, locked and deleted, never rewritten.
    "UPDATE routing_persistence.held_field SET record_value = 'x'",
    "UPDATE routing_persistence.held_field SET tenant_id = 'x'",
    "TRUNCATE routing_persistence.held_field",
    "CREATE TABLE routing_persistence.scratch (x int)",
    "DROP TABLE routing_persistence.held_field",
    "CREATE TABLE routing_persistence_scratch (x int)",
]


def _as_role(url: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{ROLE}:{quote(password)}@{host}"))


@pytest.fixture
async def role_connection(empty_database: Database) -> AsyncIterator[asyncpg.Connection]:
    """Prisma-like tables, migrated, grants applied; a real login as the role (password auth
    where the server asks for it; the local stack's trust auth accepts the user name alone)."""
    await create_prisma_tables(empty_database.url, rows=10)
    # Prisma's @updatedAt is NOT NULL without a database default: no INSERT that omits it can
    # succeed, not even one that ends in ON CONFLICT DO UPDATE (the proposed row is checked
    # first). The contract's upsert needs Project A to give it a default; model that here.
    await empty_database.execute(
        'ALTER TABLE "ExecutionRecord" ALTER COLUMN "updatedAt" SET DEFAULT CURRENT_TIMESTAMP'
    )
    await in_thread(upgrade, Settings(database_url=empty_database.url))
    password = secrets.token_urlsafe(16)
    owner = await empty_database.connect()
    try:
        await owner.execute(GRANTS.read_text())
        await owner.execute(GRANTS.read_text())  # idempotent
        await owner.execute(f"ALTER ROLE {ROLE} PASSWORD '{password}'")
    finally:
        await owner.close()
    conn = await asyncpg.connect(_as_role(empty_database.url, password))
    try:
        assert await conn.fetchval("SELECT current_user") == ROLE
        yield conn
    finally:
        await conn.close()


async def test_the_role_writes_the_consumers_columns(
    role_connection: asyncpg.Connection, empty_database: Database
) -> None:
    conn = role_connection
    await empty_database.execute(CREATE_ROWS.read_text())  # this test creates a row (create)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    e1, e2 = uuid.uuid4(), uuid.uuid4()
    # An existing row of Project A (its tenant matches) and a new one the event creates.
    written = await conn.fetch(
        UPSERT_SNAPSHOTS,
        ["req-1", "req-new"],
        ["t-1", "t-7"],
        ['{"snapshotId": "s1"}', '{"snapshotId": "s2"}'],
        [t0, t0],
        [e1, e2],
    )
    assert sorted(r["requestId"] for r in written) == ["req-1", "req-new"]
    # A newer event updates; an older one is refused by the guard (no privilege error either way).
    assert await conn.fetch(
        UPSERT_SNAPSHOTS, ["req-1"], ["t-1"], ['{"snapshotId": "s3"}'], [t0 + timedelta(1)], [e1]
    )
    assert not await conn.fetch(
        UPSERT_SNAPSHOTS, ["req-1"], ["t-1"], ['{"snapshotId": "old"}'], [t0], [e2]
    )
    policies = await conn.fetch(
        UPDATE_POLICIES,
        ["t-1", "t-unknown"],
        ['{"defaultStrategy": "cost"}'] * 2,
        [t0, t0],
        [e1, e2],
    )
    assert [r["id"] for r in policies] == ["t-1"]
    # What the classification SELECT and the loaders read.
    row = await conn.fetchrow(
        'SELECT "id", "requestId", "tenantId", "routingSnapshot", "actualCost" '
        'FROM "ExecutionRecord" WHERE "requestId" = $1',
        "req-new",
    )
    assert row is not None
    assert (row["id"], row["tenantId"]) == ("req-new", "t-7")
    assert await conn.fetchval("SELECT version_num FROM routing_persistence_version")

    # As the owner: the writes landed, Project A's columns kept their values and defaults.
    rows = await empty_database.fetch(
        'SELECT "requestId", "tenantId", "status", "routingSnapshot"->>\'snapshotId\' AS s '
        "FROM \"ExecutionRecord\" WHERE \"requestId\" IN ('req-1', 'req-new') ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [
        ("req-1", "t-1", "PENDING", "s3"),
        ("req-new", "t-7", "PENDING", "s2"),
    ]
    policy = await empty_database.fetch(
        'SELECT "name", "routingPolicy"->>\'defaultStrategy\' AS p '
        'FROM "Tenant" WHERE "id" = \'t-1\''
    )
    assert [tuple(r) for r in policy] == [("Tenant 1", "cost")]


async def test_the_role_cannot_touch_anything_else(
    role_connection: asyncpg.Connection, empty_database: Database
) -> None:
    refused: dict[str, str] = {}
    for sql in FORBIDDEN:
        try:
            await role_connection.execute(sql)
        except asyncpg.PostgresError as exc:
            refused[sql] = exc.sqlstate
        else:
            refused[sql] = "succeeded"
    wrong = {sql: state for sql, state in refused.items() if state != "42501"}
    assert not wrong, f"expected SQLSTATE 42501 (insufficient_privilege) for: {wrong}"
    # Nothing of it happened: same rows, same values.
    counts = await empty_database.fetch(
        """SELECT (SELECT count(*) FROM "ExecutionRecord") AS er,
                  (SELECT count(*) FROM "ExecutionRecord"
                    WHERE "tenantId" = 'other' OR "status" <> 'PENDING') AS changed,
                  (SELECT count(*) FROM "Tenant" WHERE "name" LIKE 'Tenant %') AS tenants"""
    )
    assert tuple(counts[0]) == (10, 0, 10)


async def test_grants_are_reset_to_the_file_on_every_run(
    role_connection: asyncpg.Connection, empty_database: Database
) -> None:
    """A privilege granted by hand is taken away by the next run of grants.sql."""
    owner = await empty_database.connect()
    try:
        await owner.execute(f'GRANT UPDATE ("name") ON "Tenant" TO {ROLE}')
        await role_connection.execute(
            """UPDATE "Tenant" SET "name" = 'by hand' WHERE "id" = 't-2'"""
        )
        await owner.execute(GRANTS.read_text())
        attributes = await owner.fetchrow(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls "
            "FROM pg_roles WHERE rolname = $1",
            ROLE,
        )
    finally:
        await owner.close()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await role_connection.execute("""UPDATE "Tenant" SET "name" = 'again' WHERE "id" = 't-2'""")
    assert tuple(attributes) == (True, False, False, False, False)


async def test_the_role_holds_locks_and_deletes_held_fields(
    role_connection: asyncpg.Connection, empty_database: Database
) -> None:
    """What holding and releasing need on the service's own table, and no more."""
    conn = role_connection
    key = ("req-1", "routingSnapshot", uuid.uuid4())
    inserted = await conn.fetch(
        "INSERT INTO routing_persistence.held_field (request_id, field, event_id, occurred_at, "
        "tenant_id, record_key, record_value, record_headers, source_topic, source_partition, "
        "source_offset, source_timestamp) VALUES ($1, $2, $3, now(), 't-1', 'k', 'v', NULL, "
        "'topic', 0, 1, 2) ON CONFLICT (request_id, field, event_id) DO NOTHING "
        "RETURNING request_id",
        *key,
    )
    assert [r["request_id"] for r in inserted] == ["req-1"]
    async with conn.transaction():
        locked = await conn.fetch(
            "SELECT h.request_id FROM routing_persistence.held_field AS h WHERE EXISTS "
            '(SELECT FROM "ExecutionRecord" AS r WHERE r."requestId" = h.request_id) '
            "FOR UPDATE OF h SKIP LOCKED"
        )
        assert [r["request_id"] for r in locked] == ["req-1"]
        deleted = await conn.execute(
            "DELETE FROM routing_persistence.held_field WHERE request_id = $1", "req-1"
        )
    assert deleted == "DELETE 1"
    assert await empty_database.fetch("SELECT 1 FROM routing_persistence.held_field") == []


# Objects the role could create through what PUBLIC holds by default (TEMPORARY on every
# database; CREATE on schema public before PostgreSQL 15, and after pg_upgrade from one).
CREATIONS = [
    "CREATE TABLE public.routing_persistence_own (x int)",
    "CREATE TEMP TABLE routing_persistence_tmp (x int)",
    "CREATE VIEW public.routing_persistence_view AS SELECT 1 AS x",
    "CREATE SEQUENCE public.routing_persistence_seq",
    "CREATE TYPE public.routing_persistence_type AS (x int)",
    "CREATE FUNCTION public.routing_persistence_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'",
]


async def _try_all(conn: asyncpg.Connection, statements: list[str]) -> dict[str, str]:
    """SQLSTATE per statement ("ok" when it succeeded), each in a transaction rolled back."""
    outcome: dict[str, str] = {}
    for sql in statements:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as exc:
            outcome[sql] = exc.sqlstate
        else:
            outcome[sql] = "ok"
        finally:
            await tx.rollback()
    return outcome


async def _login(owner: asyncpg.Connection, database: Database) -> asyncpg.Connection:
    """A new session of the role (a new password set by ``owner`` for it)."""
    password = secrets.token_urlsafe(16)
    await owner.execute(f"ALTER ROLE {ROLE} PASSWORD '{password}'")
    return await asyncpg.connect(_as_role(database.url, password))


async def test_the_role_inherits_no_right_to_create_objects_through_public(
    role_connection: asyncpg.Connection, empty_database: Database
) -> None:
    """With PUBLIC's pre-15 defaults back on the database (an older server, or one upgraded
    with pg_upgrade), the role could create tables, temporary tables, views, types and
    functions; after grants.sql none of them, and its own work still goes through."""
    owner = await empty_database.connect()
    try:
        await owner.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        await owner.execute(f'GRANT TEMPORARY ON DATABASE "{empty_database.name}" TO PUBLIC')
        role = await _login(owner, empty_database)
        try:
            before = await _try_all(role, CREATIONS)
        finally:
            await role.close()
        await owner.execute(GRANTS.read_text())
        await owner.execute(CREATE_ROWS.read_text())  # the most the role is ever granted
        role = await _login(owner, empty_database)
    finally:
        await owner.close()
    try:
        after = await _try_all(role, CREATIONS)
        # Its job still works: the consumer's upsert as the role.
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        written = await role.fetch(
            UPSERT_SNAPSHOTS, ["req-2"], ["t-2"], ['{"snapshotId": "s"}'], [t0], [uuid.uuid4()]
        )
    finally:
        await role.close()
    # The setup is what it claims: through PUBLIC alone, each of these worked.
    assert before == dict.fromkeys(CREATIONS, "ok")
    assert after == dict.fromkeys(CREATIONS, "42501")
    assert [r["requestId"] for r in written] == ["req-2"]
