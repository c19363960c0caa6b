"""The one retry mechanism: stamina, with the service's backoff settings and one retry hook.

Every loop that retries a transient fault (a batch's transaction, dead letters, offset commits,
client start-up, ``migrate``'s lock waits) is written as::

    async for attempt in retrying(settings):
        with attempt:
            ...  # raise a TransientError (errors.is_retriable) to be retried

Only errors whose ``retriable`` flag is set are retried; anything else propagates at once. The
backoff is capped exponential with jitter (``retry_initial_delay_s`` doubling up to
``retry_max_delay_s``, plus up to one initial delay of jitter), forever unless
``retry_max_attempts`` is set, after which the last error propagates.

Each scheduled retry is logged once (``retry.scheduled``: operation, attempt, wait, the error's
secret-free text) and reported to the :class:`RetryObserver` of the running service, if any, so
metrics and readiness follow without a callback threaded through the call stack.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, Protocol

import stamina
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from consumer.errors import TransientError, describe_error, is_retriable
from consumer.logs import get_logger
from consumer.settings import Settings

__all__ = ["RetryObserver", "observing_retries", "retrying"]

_log = get_logger(__name__)


class RetryObserver(Protocol):
    """Told about every retry scheduled in its context (the running service's metrics, health)."""

    def on_retry(self, error: Exception, wait_s: float) -> None: ...


_OBSERVER: contextvars.ContextVar[RetryObserver | None] = contextvars.ContextVar(
    "routing_persistence_retry_observer", default=None
)


def _on_retry(details: RetryDetails) -> None:
    error = details.caused_by
    _log.warning(
        "retry.scheduled",
        operation=error.operation if isinstance(error, TransientError) else None,
        attempt=details.retry_num,
        wait_s=round(details.wait_for, 3),
        error=describe_error(error),
    )
    observer = _OBSERVER.get()
    if observer is not None:
        observer.on_retry(error, details.wait_for)


# stamina's hooks are process-wide: ours is the only one (its structlog hook would log the
# repr of the error, which for a database error quotes the statement and its parameters).
set_on_retry_hooks([_on_retry])


@contextlib.contextmanager
def observing_retries(observer: RetryObserver) -> Iterator[None]:
    """Report the retries of this context (and the tasks it starts) to ``observer``."""
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


def retrying(settings: Settings, **overrides: Any) -> Any:
    """Attempts for ``async for`` (or plain ``for`` in blocking code) with the service's backoff.

    ``overrides`` replace stamina's arguments (``attempts``, ``wait_initial``, ``wait_max``) for
    a loop with a budget of its own, such as ``migrate``'s lock waits.
    """
    options: dict[str, Any] = {
        "on": is_retriable,
        "attempts": settings.retry_max_attempts or None,
        "timeout": None,
        "wait_initial": settings.retry_initial_delay_s,
        "wait_max": settings.retry_max_delay_s,
        "wait_jitter": settings.retry_initial_delay_s,
    }
    options.update(overrides)
    return stamina.retry_context(**options)
