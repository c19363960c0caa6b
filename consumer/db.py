"""The database engine, and what a PostgreSQL error means: the one place for SQLSTATE classes.

:func:`create_engine` builds the service's :class:`~sqlalchemy.ext.asyncio.AsyncEngine`
(asyncpg). :func:`classify_error` sorts any error of the database layer into an
:class:`ErrorClass`; :func:`translate_error` turns it into the service's error: a
:class:`~consumer.errors.TransientError` that :mod:`consumer.retry` retries, or a
:class:`~consumer.errors.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from typing import Any, Final

from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from consumer.errors import (
    ConfigurationError,
    DatabaseBusy,
    DatabaseUnavailable,
    TransientError,
    describe_error,
    sqlstate_of,
)
from consumer.settings import Settings

__all__ = [
    "APPLICATION_NAME",
    "READ_ONLY_SQLSTATE",
    "ErrorClass",
    "classify_error",
    "create_engine",
    "is_database_writable",
    "translate_error",
]

#: ``application_name`` of the service's sessions: what a DBA sees in ``pg_stat_activity``.
APPLICATION_NAME: Final = "routing-persistence"

#: ``read_only_sql_transaction``: this session's server is (now) a standby or read-only.
READ_ONLY_SQLSTATE: Final = "25006"

#: The planner's cost of a non-sequential page read in this service's sessions. Every statement
#: joins a batch to a table by a unique key; with the default (4, for spinning disks) the
#: planner hash-joins whole tables of some 10^5 rows instead of probing the index.
_RANDOM_PAGE_COST: Final = "1.1"


class ErrorClass(enum.Enum):
    """What a database error means for the batch that hit it."""

    #: The database cannot serve us now: unreachable, restarting, overloaded, read-only after a
    #: failover, or a lock held elsewhere outlasted our timeouts. Retry; not ready meanwhile.
    UNAVAILABLE = "unavailable"
    #: This transaction lost a race (deadlock, serialization failure): retry at once.
    BUSY = "busy"
    #: PostgreSQL refused the data of one record (class 22 data exception, 23 integrity
    #: violation): isolate the record and dead-letter it as ``db_rejected``.
    RECORD = "record"
    #: It can never work as configured: wrong password, no such database or role, TLS refused.
    CONFIGURATION = "configuration"
    #: Anything else (missing column, permission denied): a bug or a configuration error.
    FATAL = "fatal"


_UNAVAILABLE_CLASSES: Final = (
    "08",  # connection exception
    "53",  # insufficient resources
    "57P",  # operator intervention: shutting down, restarting, cannot connect now
)
_UNAVAILABLE_CODES: Final = frozenset(
    {
        READ_ONLY_SQLSTATE,
        "55P03",  # lock_not_available: lock_timeout expired
        "57014",  # query_canceled: statement_timeout expired (a lock held for longer)
    }
)
_BUSY_CODES: Final = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_CONFIGURATION_CLASSES: Final = (
    "28",  # invalid authorization: wrong password, no pg_hba.conf entry
    "3D",  # invalid catalog name: no such database
)
_RECORD_CLASSES: Final = ("22", "23")


def _classify_sqlstate(code: str) -> ErrorClass:
    if code in _UNAVAILABLE_CODES or code.startswith(_UNAVAILABLE_CLASSES):
        return ErrorClass.UNAVAILABLE
    if code in _BUSY_CODES:
        return ErrorClass.BUSY
    if code.startswith(_RECORD_CLASSES):
        return ErrorClass.RECORD
    if code.startswith(_CONFIGURATION_CLASSES):
        return ErrorClass.CONFIGURATION
    return ErrorClass.FATAL


def classify_error(exc: BaseException) -> ErrorClass:
    """Classify an error raised by the database layer (SQLAlchemy, asyncpg or the socket).

    With a SQLSTATE, by its class (see :class:`ErrorClass`). Without, a lost or refused
    connection is ``UNAVAILABLE`` and anything else ``FATAL`` (a bug in the caller).
    """
    code = sqlstate_of(exc)
    if code is not None:
        return _classify_sqlstate(code)
    current: BaseException | None = exc
    seen: list[BaseException] = []
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        if isinstance(current, ssl.SSLError):
            return ErrorClass.CONFIGURATION  # a certificate or protocol refused: not a blip
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return ErrorClass.UNAVAILABLE
        if isinstance(current, (ConnectionError, OSError, TimeoutError)):
            return ErrorClass.UNAVAILABLE
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return ErrorClass.FATAL


def translate_error(
    exc: BaseException, *, operation: str
) -> TransientError | ConfigurationError | None:
    """The service's error standing for a database error (raise it ``from exc``), or ``None``
    for a bug, which must propagate as it is.

    A :class:`~consumer.errors.TransientError` for a fault that clears (retried), a
    :class:`~consumer.errors.ConfigurationError` for one that never will (exit 2). The message
    is :func:`~consumer.errors.describe_error`'s: the SQLSTATE and the driver's first line,
    never the statement, its parameters or the URL.
    """
    kind = classify_error(exc)
    if kind is ErrorClass.UNAVAILABLE:
        return DatabaseUnavailable(describe_error(exc), operation=operation)
    if kind is ErrorClass.BUSY:
        return DatabaseBusy(describe_error(exc), operation=operation)
    if kind is ErrorClass.CONFIGURATION:
        return ConfigurationError(f"the database refuses this service: {describe_error(exc)}")
    return None


def _discard_read_only_connections(context: ExceptionContext) -> None:
    # A session that finds the server read-only was connected to a standby or a demoted
    # primary, and stays so for life. Treated as a disconnect, its connection is thrown away
    # and the pool renews the others, so the next attempt reaches whatever primary the
    # database's address now leads to.
    if sqlstate_of(context.original_exception) == READ_ONLY_SQLSTATE:
        context.is_disconnect = True


def create_engine(
    settings: Settings, *, application_name: str = APPLICATION_NAME, **kwargs: Any
) -> AsyncEngine:
    """An asyncpg-backed engine for ``settings.database_url``.

    The pool holds ``settings.db_pool_size`` connections (no overflow). Each session runs with
    ``statement_timeout`` and a shorter ``lock_timeout`` (a batch blocked by another session's
    lock gives up early and is retried), the given ``application_name`` and
    ``random_page_cost = 1.1``. SQL parameters are never rendered into errors
    (``hide_parameters``), and a session that finds the server read-only is discarded.
    ``kwargs`` go to :func:`~sqlalchemy.ext.asyncio.create_async_engine` and win (e.g.
    ``poolclass=NullPool`` for one-shot commands). Nothing is connected yet.
    """
    server_settings = {
        "application_name": application_name,
        "statement_timeout": str(settings.db_statement_timeout_ms),
        "lock_timeout": str(settings.lock_timeout_ms),
        "random_page_cost": _RANDOM_PAGE_COST,
    }
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": 0,
        # A connection killed by a PostgreSQL restart is found and replaced before use.
        "pool_pre_ping": True,
        "hide_parameters": True,
        # database_connect_args carries the libpq TLS parameters (CA file) when the URL has them.
        "connect_args": {**settings.database_connect_args, "server_settings": server_settings},
    }
    if "poolclass" in kwargs:
        # NullPool and friends take no sizing arguments.
        options.pop("pool_size")
        options.pop("max_overflow")
    options.update(kwargs)
    engine = create_async_engine(settings.async_database_url, **options)
    event.listen(engine.sync_engine, "handle_error", _discard_read_only_connections)
    return engine


async def is_database_writable(engine: AsyncEngine, *, timeout_s: float) -> bool:
    """Whether a session can write now (connected, not a standby, not read-only by default).

    A session that finds the server read-only is discarded from the pool (see
    :func:`create_engine`).

    Raises :class:`~consumer.errors.ConfigurationError` when the database refuses this service
    for good (wrong password, no such database, TLS refused); any other failure is ``False``.
    """
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            read_only = await conn.scalar(text("SELECT current_setting('transaction_read_only')"))
            if read_only != "off":
                # Like a batch's 25006: this session stays read-only for life, so it is thrown
                # away, and the next probe reaches whatever primary the address leads to now.
                await conn.invalidate()
    except Exception as exc:
        translated = translate_error(exc, operation="probe")
        if isinstance(translated, ConfigurationError):
            raise translated from exc
        return False
    return bool(read_only == "off")
