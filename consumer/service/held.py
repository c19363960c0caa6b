"""The running service's side of held fields: a timer that releases, expires and measures them.

:meth:`HeldFieldsTimer.run_forever` runs one :meth:`~consumer.pipeline.release.Releaser.cycle`
every ``held_release_interval_s`` (each instance: ``SKIP LOCKED`` splits the work) and refreshes
the gauges ``routing_consumer_held_fields`` / ``_held_oldest_age_seconds`` every
``lag_refresh_interval_s``, never during a scrape. A transient fault (database or broker
unavailable), or the database refusing this service after start-up (a password rotated, the
database dropped: the readiness probe reports it too), is logged when it starts and when it
clears, and the next cycle tries again; anything else (a bug, a permission missing) is raised:
the service stops with exit code 1.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.db import translate_error
from consumer.errors import TransientError, describe_error
from consumer.logs import get_logger
from consumer.pipeline.deadletter import DeadLetterWriter
from consumer.pipeline.held import held_stats
from consumer.pipeline.release import Releaser, ReleaseReport
from consumer.service.metrics import ServiceMetrics
from consumer.settings import Settings

__all__ = ["HeldFieldsTimer"]

_log = get_logger(__name__)


class HeldFieldsTimer:
    """Releases and expires held fields on a timer, and keeps their gauges fresh."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        writer: DeadLetterWriter,
        metrics: ServiceMetrics,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._releaser = Releaser(settings, engine, writer)
        self._metrics = metrics
        self._failing = False

    async def run_forever(self) -> None:
        """Cycle until cancelled (module docstring); raises only what is not transient."""
        interval = self._settings.held_release_interval_s
        gauges_due = 0.0
        while True:
            started = time.monotonic()
            try:
                self._record(await self._releaser.cycle())
                if started >= gauges_due:
                    await self.refresh_gauges()
                    gauges_due = started + self._settings.lag_refresh_interval_s
                if self._failing:
                    self._failing = False
                    _log.info("held.release_resumed")
            except Exception as exc:
                self._survive(exc)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def refresh_gauges(self) -> None:
        """Count the held fields now and set the two gauges."""
        stats = await held_stats(self._engine)
        self._metrics.held_fields.set(stats.total)
        self._metrics.held_oldest_age_seconds.set(stats.oldest_age_s or 0.0)

    def _record(self, report: ReleaseReport) -> None:
        metrics = self._metrics
        for (event_type, outcome), count in report.released.items():
            metrics.released.labels(type=event_type, outcome=outcome.value).inc(count)
        for reason, count in report.dead_letter_reasons.items():
            metrics.dead_letters.labels(reason=reason).inc(count)
        metrics.observe_latencies(report.applied_occurred_at)
        if report.released:
            _log.debug(
                "held.released",
                **{f"{t}.{o}": n for (t, o), n in sorted(report.released.items())},
            )
        expired = report.dead_letter_reasons.get("row_missing", 0)
        if expired:
            _log.warning(
                "held.expired",
                dead_letters=expired,
                ttl_s=self._settings.missing_row_ttl.total_seconds(),
            )

    def _survive(self, exc: Exception) -> None:
        error = exc if isinstance(exc, TransientError) else translate_error(exc, operation="held")
        if error is None:
            raise exc
        # A refusal (ConfigurationError) is fatal at start-up only, which is over by now: idle,
        # the service waits for the database to take it again, as its probe does. A batch
        # that meets the refusal still stops the process.
        if not self._failing:
            self._failing = True
            _log.warning("held.release_failed", error=describe_error(error))
