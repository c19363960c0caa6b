"""The service's errors: each class says whether retrying can help, and callers read that flag.

* ``retriable = True`` (:class:`TransientError` and its kinds): the database or the broker is
  unavailable, a lock or a race was lost; :mod:`consumer.retry` backs off and tries again.
* :class:`ConfigurationError`: the configuration cannot work (wrong password, no such database,
  a port in use); the process exits 2 with the message.
* Anything else is a bug: it surfaces loudly and nothing is committed.

:func:`describe_error` is the one way to put an exception into a log line or a message: the
driver's first line and the SQLSTATE, never SQLAlchemy's rendering (which appends the statement
and its parameters) and never a URL.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "MissingTopicsError",
    "RoutingPersistenceError",
    "TransientError",
    "describe_error",
    "error_text",
    "is_retriable",
    "sqlstate_of",
]

#: Longest text :func:`describe_error` keeps of a driver's message.
_MAX_DETAIL_CHARS = 300


class RoutingPersistenceError(Exception):
    """Root of the service's errors. ``retriable``: whether the same work may succeed later."""

    retriable: ClassVar[bool] = False


class TransientError(RoutingPersistenceError):
    """A fault expected to clear by itself. ``operation`` names what failed (metrics, logs)."""

    retriable: ClassVar[bool] = True
    #: Whether the fault means this instance cannot do its work now (``/readyz`` 503).
    is_unready: ClassVar[bool] = True

    def __init__(self, message: str, *, operation: str) -> None:
        super().__init__(message)
        self.operation = operation


class DatabaseUnavailable(TransientError):
    """PostgreSQL cannot be reached, is restarting, is read-only, or keeps a lock from us."""


class DatabaseBusy(TransientError):
    """The transaction lost a race (deadlock, serialization failure): the database is fine."""

    is_unready: ClassVar[bool] = False


class BrokerUnavailable(TransientError):
    """Kafka cannot be reached or refused a request for a reason that clears by itself."""


class ConfigurationError(RoutingPersistenceError):
    """The configuration cannot work (credentials, database name, TLS, ports): fix, restart."""


class MissingTopicsError(ConfigurationError):
    """Topics a command needs do not exist on the broker (the message names them)."""


def is_retriable(exc: BaseException) -> bool:
    """The predicate every retry loop uses: the error's own ``retriable`` flag."""
    return isinstance(exc, RoutingPersistenceError) and exc.retriable


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``.orig``, then ``__cause__``, without cycles."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return chain


def sqlstate_of(exc: BaseException) -> str | None:
    """The five-character SQLSTATE carried by ``exc`` or by one of its causes, else ``None``."""
    for item in _causes(exc):
        code = getattr(item, "sqlstate", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def error_text(exc: BaseException) -> str:
    """The innermost driver error's first line, secret-free (see :func:`describe_error`)."""
    chain = _causes(exc)
    inner = next((e for e in chain if getattr(e, "sqlstate", None)), chain[-1])
    lines = str(inner).strip().splitlines()
    text = " ".join(lines[0].split())[:_MAX_DETAIL_CHARS] if lines else ""
    # asyncpg's adapter prefixes "<class 'asyncpg...'>: "; aiokafka often starts with its own
    # class name: keep the message only.
    text = text.removeprefix("<class ").split(">: ", 1)[-1]
    name = type(inner).__name__
    return text.removeprefix(name).removeprefix(":").strip() if text.startswith(name) else text


def describe_error(exc: BaseException) -> str:
    """One secret-free line: the innermost driver error's type, SQLSTATE and first line.

    SQLAlchemy's own text appends the SQL statement and its parameters (payloads, ids), and a
    connection error may quote a DSN: neither is ever used. Our own errors are already safe
    and are returned as they are.
    """
    if isinstance(exc, RoutingPersistenceError):
        return str(exc)
    chain = _causes(exc)
    inner = next((e for e in chain if getattr(e, "sqlstate", None)), chain[-1])
    code = sqlstate_of(exc)
    head = f"{type(inner).__name__} [{code}]" if code else type(inner).__name__
    text = error_text(exc)
    return f"{head}: {text}" if text else head
