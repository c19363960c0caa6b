"""Alembic environment: async (asyncpg), one transaction per revision, URL from Settings.

``config.attributes["settings"]`` holds the :class:`~consumer.settings.Settings` that
:func:`consumer.ops.migrate.upgrade` was called with; the plain ``alembic`` CLI falls back to
``Settings()`` (the ``ROUTING_*`` environment). The URL is never read from ``alembic.ini`` and
never logged with its password.

Online mode runs the async engine on a private event loop (``asyncio.run``), so it must be called
from a thread without a running loop (the CLI, or ``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection

from consumer.db import create_engine
from consumer.logs import get_logger
from consumer.ops.migrate import APPLICATION_NAME
from consumer.settings import Settings
from consumer.tables import HELD_SCHEMA, VERSION_TABLE, metadata

config = context.config
_log = get_logger("consumer.ops.migrate")


def _settings() -> Settings:
    settings = config.attributes.get("settings")
    if settings is None:
        settings = Settings()
    if not isinstance(settings, Settings):
        raise TypeError("config.attributes['settings'] must be a consumer.settings.Settings")
    return settings


def _log_applied(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    _log.info(
        "migrate.revision_applied",
        revision=step.up_revision_id,  # on a downgrade: the revision being undone
        direction="upgrade" if step.is_upgrade else "downgrade",
    )


_COMMON: dict[str, Any] = {
    "target_metadata": metadata,
    "version_table": VERSION_TABLE,
    # Each revision commits on its own: a lock timeout rolls back only the revision that hit it,
    # and the retry resumes there. Its SET LOCAL lock_timeout ends with it.
    "transaction_per_migration": True,
    "compare_type": True,
    # The service's own schema too (held fields); never the other schemas of the database.
    "include_schemas": True,
    "include_name": lambda name, kind, parents: kind != "schema" or name in (None, HELD_SCHEMA),
}


def run_migrations_offline() -> None:
    """Write the SQL to the configured output (``--sql``); only the dialect is needed, no URL."""
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        # Named paramstyle: '%' in the DO blocks is written as is, not doubled for a driver.
        dialect_opts={"paramstyle": "named"},
        **_COMMON,
    )
    with context.begin_transaction():
        context.run_migrations()


#: Session-level advisory lock key serialising concurrent ``migrate`` runs (two pods, a Job and
#: an operator): the second waits for the first, then finds the revisions applied.
#: The value is the first 8 bytes of sha256("routing-persistence migrate"), as a signed bigint.
MIGRATION_LOCK_KEY = -0x7DB103E9EE815E94


def _run_sync(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    # Commit the implicit transaction that SELECT began (the advisory lock is session-level
    # and outlives it), so each revision then starts a transaction of its own.
    connection.commit()
    context.configure(connection=connection, on_version_apply=_log_applied, **_COMMON)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(settings: Settings) -> None:
    engine = create_engine(settings, application_name=APPLICATION_NAME, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Connect with asyncpg and run the pending revisions, each in its own transaction."""
    asyncio.run(_run_async(_settings()))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
