"""Helpers for the migration and grants tests: Prisma-like tables, catalog reads, schema diff."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from consumer.db import create_engine
from consumer.settings import Settings
from consumer.tables import HELD_SCHEMA, VERSION_TABLE, metadata

SERVICE_COLUMNS = {
    "ExecutionRecord": {
        "routingSnapshot": "jsonb",
        "routingSnapshotOccurredAt": "timestamp with time zone",
        "routingSnapshotEventId": "uuid",
        "actualCost": "jsonb",
        "actualCostOccurredAt": "timestamp with time zone",
        "actualCostEventId": "uuid",
    },
    "Tenant": {
        "routingPolicy": "jsonb",
        "routingPolicyOccurredAt": "timestamp with time zone",
        "routingPolicyEventId": "uuid",
    },
}

# Projects A's and C's tables as Prisma would have made them: more columns than the baseline,
# some NOT NULL with defaults, one NOT NULL without, timestamp(3), and (B6 design) Prisma already
# added "routingSnapshot"/"actualCost" to "ExecutionRecord".
PRISMA_TABLES = """
CREATE TABLE "ExecutionRecord" (
    "id" text NOT NULL,
    "requestId" text NOT NULL,
    "tenantId" text,
    "status" text NOT NULL DEFAULT 'PENDING',
    "model" text,
    "latencyMs" integer NOT NULL DEFAULT 0,
    "routingSnapshot" jsonb,
    "actualCost" jsonb,
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" timestamp(3) NOT NULL
);
CREATE TABLE "Tenant" (
    "id" text NOT NULL,
    "name" text NOT NULL,
    "plan" text NOT NULL DEFAULT 'free',
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
"""

PRISMA_ROWS = """
INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId", "model", "latencyMs",
                               "routingSnapshot", "updatedAt")
SELECT 'er-' || g, 'req-' || g, 't-' || (g % 100), 'gpt-4o', g % 1000,
       CASE WHEN g % 100000 = 0 THEN '{{"writtenBy": "prisma"}}'::jsonb END, now()
FROM generate_series(1, {rows}) AS g;
INSERT INTO "Tenant" ("id", "name")
SELECT 't-' || g, 'Tenant ' || g FROM generate_series(1, {rows}) AS g;
"""

# Indexes after the rows: the same end state, built faster.
PRISMA_INDEXES = """
ALTER TABLE "ExecutionRecord" ADD CONSTRAINT "ExecutionRecord_pkey" PRIMARY KEY ("id");
CREATE UNIQUE INDEX "ExecutionRecord_requestId_key" ON "ExecutionRecord" ("requestId");
ALTER TABLE "Tenant" ADD CONSTRAINT "Tenant_pkey" PRIMARY KEY ("id");
"""


async def create_prisma_tables(url: str, rows: int) -> None:
    """Make Projects A's and C's tables in the database at ``url``, ``rows`` rows each."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(PRISMA_TABLES)
        await conn.execute(PRISMA_ROWS.format(rows=int(rows)))
        await conn.execute(PRISMA_INDEXES)
        await conn.execute('ANALYZE "ExecutionRecord", "Tenant"')
    finally:
        await conn.close()


async def columns(url: str, table: str) -> dict[str, tuple[str, bool, str | None, str | None]]:
    """``{name: (type, nullable, default, comment)}`` of ``table``, from the catalog."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type,
                   NOT a.attnotnull AS n, pg_get_expr(d.adbin, d.adrelid) AS dflt,
                   col_description(a.attrelid, a.attnum) AS c
            FROM pg_attribute a
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            f'"{table}"',
        )
    finally:
        await conn.close()
    return {r["attname"]: (r["type"], r["n"], r["dflt"], r["c"]) for r in rows}


async def fetchval(url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def schema_diff(url: str) -> list[Any]:
    """Alembic autogenerate's differences between ``consumer.tables.metadata`` and the database."""

    def include_name(name: str | None, kind: str, parents: Any) -> bool:
        # The default schema and the service's own; other projects' schemas are not ours.
        return kind != "schema" or name in (None, HELD_SCHEMA)

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "include_schemas": True,
                "include_name": include_name,
            },
        )
        return list(compare_metadata(context, metadata))

    engine = create_engine(Settings(database_url=url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


async def version(url: str) -> str | None:
    """The revision recorded in the version table (``None`` when empty or missing)."""
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass($1)", VERSION_TABLE) is None:
            return None
        value = await conn.fetchval(f"SELECT version_num FROM {VERSION_TABLE}")
        return str(value) if value is not None else None
    finally:
        await conn.close()


async def in_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking migration call off the event loop (Alembic's env runs its own loop)."""
    return await asyncio.to_thread(func, *args, **kwargs)
