"""``routing-persistence migrate``: Alembic ``upgrade head``, safe to run against live traffic.

Each revision runs in its own transaction under ``SET LOCAL lock_timeout``
(``settings.migrate_lock_timeout_ms``): a revision that cannot get its table lock in that time
rolls back (SQLSTATE 55P03) and is retried with backoff (:func:`consumer.retry.retrying`) up
to ``settings.migrate_max_attempts`` attempts, so live traffic never queues behind it for longer
than the lock timeout. Raises :class:`~consumer.errors.TransientError` when the lock never came
(the CLI exits 1), SQLAlchemy's errors for anything else. :func:`migrate` is the command:
exit 0 done (or nothing to do), 1 the locks never came or the database refused, 2 bad usage.

Alembic runs its own event loop: call from a thread without one (the CLI, ``asyncio.to_thread``).
Concurrent runs take turns (a lock in the process, an advisory lock across processes).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Final, TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from consumer.db import create_engine
from consumer.errors import (
    DatabaseUnavailable,
    RoutingPersistenceError,
    TransientError,
    describe_error,
    sqlstate_of,
)
from consumer.logs import get_logger
from consumer.ops._render import stderr_console
from consumer.retry import retrying
from consumer.settings import Settings
from consumer.tables import VERSION_TABLE

__all__ = [
    "APPLICATION_NAME",
    "LOCK_NOT_AVAILABLE",
    "SCRIPT_LOCATION",
    "alembic_config",
    "current_revision",
    "downgrade",
    "migrate",
    "upgrade",
]

_log = get_logger(__name__)

#: SQLSTATE of ``lock_timeout`` expiring (lock_not_available).
LOCK_NOT_AVAILABLE: Final = "55P03"

#: What ``pg_stat_activity`` shows for the migration's sessions (``migrations/env.py`` uses it).
APPLICATION_NAME: Final = "routing-persistence-migrate"

#: Where Alembic finds ``env.py`` and ``versions/``: the installed ``migrations`` package, as a
#: package resource (found on ``sys.path`` whatever the working directory; never imported here).
SCRIPT_LOCATION: Final = "migrations:"

# Alembic keeps the running environment in module globals (alembic.context): two commands in
# one process at once would trample each other. Other processes are serialised by env.py's
# advisory lock.
_ALEMBIC = threading.Lock()

_BACKOFF_INITIAL_S: Final = 0.25
_BACKOFF_MAX_S: Final = 10.0


class _LockUnavailable(DatabaseUnavailable):
    """A revision's ``lock_timeout`` expired: another session holds a conflicting lock."""


def alembic_config(settings: Settings, *, output: TextIO | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` for ``settings``, built in code (no ini file).

    ``script_location`` is the installed ``migrations`` package (:data:`SCRIPT_LOCATION`); the
    database URL travels as the ``settings`` attribute and is never written into the config
    (whose options can end up in logs). ``output`` receives the ``--sql`` script.
    """
    config = Config(output_buffer=output if output is not None else sys.stdout)
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("path_separator", "os")
    config.attributes["settings"] = settings
    config.attributes["lock_timeout_ms"] = settings.migrate_lock_timeout_ms
    return config


def _run_with_lock_retries(settings: Settings, action: str, run: Callable[[], None]) -> None:
    attempts = settings.migrate_max_attempts
    try:
        for attempt in retrying(
            settings,
            attempts=attempts,
            wait_initial=_BACKOFF_INITIAL_S,
            wait_max=_BACKOFF_MAX_S,
            wait_jitter=_BACKOFF_INITIAL_S,
        ):
            with attempt:
                started = time.monotonic()
                try:
                    with _ALEMBIC:
                        run()
                except Exception as exc:
                    if sqlstate_of(exc) != LOCK_NOT_AVAILABLE:
                        raise
                    if attempt.num < attempts:
                        _log.warning(
                            "migrate.lock_timeout",
                            action=action,
                            attempt=attempt.num,
                            max_attempts=attempts,
                            lock_timeout_ms=settings.migrate_lock_timeout_ms,
                            waited_ms=round((time.monotonic() - started) * 1000),
                        )
                    raise _LockUnavailable(describe_error(exc), operation="migrate") from exc
    except _LockUnavailable as exc:
        _log.error(
            "migrate.lock_unavailable",
            action=action,
            attempts=attempts,
            lock_timeout_ms=settings.migrate_lock_timeout_ms,
            database=settings.redacted_database_url,
        )
        raise TransientError(
            f"migrate {action}: could not get a table lock within "
            f"{settings.migrate_lock_timeout_ms} ms in {attempts} attempts on "
            f"{settings.redacted_database_url}; another session holds a conflicting lock "
            "(see pg_locks); nothing of the pending revision was applied, run it again",
            operation="migrate",
        ) from exc


def upgrade(settings: Settings, *, sql: bool = False, from_revision: str | None = None) -> None:
    """Bring the database of ``settings`` to the newest revision (``alembic upgrade head``).

    Idempotent: at head, it runs no DDL and changes nothing. ``sql=True`` prints the SQL to
    stdout instead (offline mode; nothing connects), from the start or from ``from_revision``;
    that script sets ``lock_timeout`` too but cannot retry: a DBA reruns the failed revision.

    Raises :class:`~consumer.errors.TransientError` when the locks stayed unavailable for
    ``settings.migrate_max_attempts`` attempts (the pending revision is rolled back), and
    SQLAlchemy's errors for anything else (unreachable database, missing privilege).
    """
    if sql:
        target = f"{from_revision}:head" if from_revision else "head"
        with _ALEMBIC:
            command.upgrade(alembic_config(settings), target, sql=True)
        return
    if from_revision is not None:
        raise ValueError("from_revision only applies to sql=True")
    started = time.monotonic()
    before = current_revision(settings)
    _run_with_lock_retries(
        settings, "upgrade", lambda: command.upgrade(alembic_config(settings), "head")
    )
    _log.info(
        "migrate.done",
        action="upgrade",
        from_revision=before,
        to_revision=current_revision(settings),
        seconds=round(time.monotonic() - started, 3),
    )


def downgrade(settings: Settings, revision: str = "base") -> None:
    """Undo revisions down to ``revision`` (``base``: all), with the same lock discipline.

    Removes exactly what the upgrades added: the service's columns that carry its ownership
    comment, and the baseline tables only when the baseline created them.
    """
    _run_with_lock_retries(
        settings, "downgrade", lambda: command.downgrade(alembic_config(settings), revision)
    )
    _log.info("migrate.done", action="downgrade", to_revision=revision)


def current_revision(settings: Settings) -> str | None:
    """The revision the database is at (``None`` before the first migration)."""

    def read(connection: Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    async def connect_and_read() -> str | None:
        engine = create_engine(settings, application_name=APPLICATION_NAME, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(connect_and_read())


async def migrate(
    settings: Settings,
    *,
    sql: bool = False,
    from_revision: str | None = None,
    lock_timeout_ms: int | None = None,
) -> int:
    """``routing-persistence migrate``: :func:`upgrade` in a thread; returns the exit code.

    ``lock_timeout_ms`` overrides ``settings.migrate_lock_timeout_ms``. Failures are reported on
    stderr in one line naming the database (without its password) and the SQLSTATE, never the
    statement or its parameters.
    """
    errors = stderr_console()
    if from_revision is not None and not sql:
        errors.print("migrate: --from-revision only applies with --sql")
        return 2
    if lock_timeout_ms is not None:
        settings = settings.model_copy(update={"migrate_lock_timeout_ms": lock_timeout_ms})
    try:
        await asyncio.to_thread(upgrade, settings, sql=sql, from_revision=from_revision)
    except RoutingPersistenceError as exc:
        errors.print(f"migrate: {exc}")
        return 1
    except (SQLAlchemyError, OSError) as exc:
        errors.print(f"migrate failed on {settings.redacted_database_url}: {describe_error(exc)}")
        return 1
    return 0
