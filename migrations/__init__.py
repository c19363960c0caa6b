"""Alembic migrations of routing-persistence (run them with ``routing-persistence migrate``).

Revisions are written for a live database that other projects own: ``0001_baseline`` creates
``"ExecutionRecord"`` and ``"Tenant"`` only when missing; ``0002``/``0003`` add this service's
nullable, default-less columns, one table per revision. Each revision runs in its own transaction
and starts with :func:`set_lock_timeout`, so no DDL statement queues traffic behind it for longer
than ``lock_timeout`` (:func:`consumer.ops.migrate.upgrade` retries). Alembic finds this package
as the resource ``migrations:``; it depends on ``consumer``, never the reverse.
"""

from __future__ import annotations

from alembic import context, op

__all__ = ["DEFAULT_LOCK_TIMEOUT_MS", "lock_timeout_ms", "set_lock_timeout"]

#: Used when the Alembic config carries no ``lock_timeout_ms`` attribute (plain ``alembic`` CLI).
DEFAULT_LOCK_TIMEOUT_MS = 2000


def lock_timeout_ms() -> int:
    """The ``lock_timeout`` (milliseconds) of this run: ``config.attributes["lock_timeout_ms"]``."""
    value = context.config.attributes.get("lock_timeout_ms", DEFAULT_LOCK_TIMEOUT_MS)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"lock_timeout_ms must be a positive integer, got {value!r}")
    return value


def set_lock_timeout() -> None:
    """Emit ``SET LOCAL lock_timeout`` for the current revision's transaction.

    ``LOCAL``: the setting ends with the revision's transaction, so it never leaks into the rest
    of a DBA's ``psql`` session running the ``--sql`` script.
    """
    # An int formatted into the statement: SET takes no bind parameters.
    op.execute(f"SET LOCAL lock_timeout = '{lock_timeout_ms():d}ms'")
