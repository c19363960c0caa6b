"""The error hierarchy: every error says whether retrying can help.

* :class:`TransientError` (``retriable = True``): the database or broker is unavailable, a
  connection was reset, a deadlock or serialization failure; the caller backs off and retries.
* :class:`RejectedRecord`: this one record can never be applied; it carries its dead-letter
  reason code and goes to the dead-letter topic.
* anything else derived from :class:`RoutingPersistenceError` is a configuration problem or a bug:
  it surfaces loudly and the process exits non-zero, never skipping records.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ConfigurationError",
    "RejectedRecord",
    "RoutingPersistenceError",
    "SchemaDriftError",
    "TransientError",
]


class RoutingPersistenceError(Exception):
    """Root of the service's errors. ``retriable`` tells the caller whether to try again."""

    retriable: ClassVar[bool] = False


class TransientError(RoutingPersistenceError):
    """A fault expected to clear by itself (database restarting, broker unavailable)."""

    retriable: ClassVar[bool] = True


class ConfigurationError(RoutingPersistenceError):
    """The configuration cannot work (bad URL, wrong credentials): fix it and restart."""


class RejectedRecord(RoutingPersistenceError):
    """One record that can never be applied; ``reason`` is its dead-letter reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SchemaDriftError(RoutingPersistenceError):
    """A stored JSON value no longer matches the model (names the table, row and field)."""
