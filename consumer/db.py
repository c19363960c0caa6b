"""The database engine and the classification of PostgreSQL errors.

:func:`create_engine` builds the service's one :class:`~sqlalchemy.ext.asyncio.AsyncEngine`
(asyncpg) from :class:`~consumer.settings.Settings`. :func:`classify_error` says what a database
error means for the caller: retry the batch, isolate one record, or stop.
"""

from __future__ import annotations

import enum
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from consumer.settings import Settings

__all__ = [
    "APPLICATION_NAME",
    "ErrorClass",
    "classify_error",
    "classify_sqlstate",
    "create_engine",
    "sqlstate_of",
]

#: ``application_name`` of the service's sessions: what a DBA sees in ``pg_stat_activity``.
APPLICATION_NAME = "routing-persistence"


#: The planner's cost of a non-sequential page read in this service's sessions (see below).
_RANDOM_PAGE_COST: Final = "1.1"


def create_engine(
    settings: Settings, *, application_name: str = APPLICATION_NAME, **kwargs: Any
) -> AsyncEngine:
    """An asyncpg-backed engine for ``settings.database_url``.

    The pool holds ``settings.db_pool_size`` connections (no overflow), each session runs with
    ``statement_timeout = settings.db_statement_timeout_ms`` (0 = none), the given
    ``application_name`` and ``random_page_cost = 1.1`` (index probes for its key joins).
    ``kwargs`` go to :func:`~sqlalchemy.ext.asyncio.create_async_engine` and win over these
    defaults (e.g. ``poolclass=NullPool`` for one-shot commands).

    Nothing is connected yet; connection errors surface on first use. The URL (which may hold a
    password) is never logged: SQLAlchemy's ``echo`` stays off and messages use
    ``settings.redacted_database_url``.
    """
    server_settings = {
        "application_name": application_name,
        "statement_timeout": str(settings.db_statement_timeout_ms),
        # Every statement this service runs joins its batch to the table by a unique key. With
        # the default random_page_cost (4, for spinning disks) the planner reads a table of up to
        # some 10^5 rows whole for each batch (hash join) instead of probing the index per key;
        # on the benchmark's live runs that doubled PostgreSQL's CPU per event and the p99
        # (bench/RESULTS.md). 1.1 is the usual value for SSDs and cached data; only these
        # sessions get it.
        "random_page_cost": _RANDOM_PAGE_COST,
    }
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": 0,
        # A connection killed by a PostgreSQL restart is found and replaced before use.
        "pool_pre_ping": True,
        # database_connect_args carries the libpq TLS parameters (CA file) when the URL has them.
        "connect_args": {**settings.database_connect_args, "server_settings": server_settings},
    }
    if "poolclass" in kwargs:
        # NullPool and friends take no sizing arguments.
        options.pop("pool_size")
        options.pop("max_overflow")
    options.update(kwargs)
    return create_async_engine(settings.async_database_url, **options)


class ErrorClass(enum.Enum):
    """What a PostgreSQL error means for the batch that hit it."""

    #: The database is unavailable, restarting, overloaded, or the transaction lost a race
    #: (deadlock, serialization failure, lock timeout): roll back and retry the whole batch.
    TRANSIENT = "transient"
    #: PostgreSQL refused the data of one record (class 22 data exception, 23 integrity
    #: violation): isolate that record and dead-letter it as ``db_rejected``.
    RECORD_PERMANENT = "record_permanent"
    #: Anything else (missing column, permission denied, syntax error): a bug or a
    #: configuration problem; stop loudly and commit nothing.
    FATAL = "fatal"


_TRANSIENT_CLASSES = (
    "08",
    "53",
    "57P",
)  # connection, insufficient resources, operator intervention
_TRANSIENT_CODES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
    }
)
_RECORD_PERMANENT_CLASSES = ("22", "23")


def classify_sqlstate(sqlstate: str | None) -> ErrorClass:
    """Classify a five-character SQLSTATE (``None``: no SQLSTATE, e.g. a dropped connection).

    Transient (docs/architecture.md): class 08 (connection), 40001, 40P01, 53 (insufficient
    resources), 57P (server shutting down or restarting), 55P03 (lock timeout), and ``None``:
    an error without a SQLSTATE comes from the connection (reset, refused, closed), not from
    PostgreSQL judging the statement. Record-permanent: classes 22 and 23. Everything else,
    ``57014`` (statement_timeout) and ``XX000`` included, is fatal: retrying the same batch
    would fail the same way, so it must surface.
    """
    if sqlstate is None:
        return ErrorClass.TRANSIENT
    if sqlstate in _TRANSIENT_CODES or sqlstate.startswith(_TRANSIENT_CLASSES):
        return ErrorClass.TRANSIENT
    if sqlstate.startswith(_RECORD_PERMANENT_CLASSES):
        return ErrorClass.RECORD_PERMANENT
    return ErrorClass.FATAL


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE carried by ``exc`` or by one of its causes (SQLAlchemy wraps asyncpg's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None)
        if isinstance(code, str) and len(code) == 5:
            return code
        # SQLAlchemy's DBAPIError keeps the driver's error in .orig; asyncpg's adapter keeps
        # asyncpg's own exception as the cause.
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def _is_connection_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (ConnectionError, OSError, TimeoutError))


def classify_error(exc: BaseException) -> ErrorClass:
    """Classify an exception raised by the database layer (SQLAlchemy, asyncpg or the socket).

    An error with a SQLSTATE is classified by :func:`classify_sqlstate`; one without is transient
    when it is a lost or refused connection, else fatal (a bug in the caller).
    """
    code = sqlstate_of(exc)
    if code is not None:
        return classify_sqlstate(code)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_connection_error(current):
            return ErrorClass.TRANSIENT
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    # (asyncpg's ConnectionDoesNotExistError carries SQLSTATE 08003: handled above.)
    return ErrorClass.FATAL
