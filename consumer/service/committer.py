"""Offset commits off the apply path: only durable batches, one commit at a time, never lost.

The loop hands each finished batch's offsets to :meth:`OffsetCommitter.hand` and fetches the
next batch at once. One task commits what it was handed, one commit at a time; offsets handed
meanwhile are merged into the next (per partition the newest covers the older). Only finished
batches hand offsets over, so a committed offset never passes a record that is not in
PostgreSQL or, acknowledged, on the dead-letter topic.

A commit that fails for a reason that clears (timeout, coordinator moved, broker down) is
retried with backoff, merged with what came meanwhile, so a partition that goes quiet does not
keep a stale committed offset. Offsets of partitions revoked meanwhile are dropped: their new
owner rereads those records, which idempotence makes harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
)
from aiokafka.structs import TopicPartition

from consumer.errors import BrokerUnavailable, ConfigurationError, describe_error
from consumer.kafka import FATAL_KAFKA_ERRORS, partition_names
from consumer.logs import get_logger
from consumer.retry import retrying
from consumer.service.metrics import ServiceMetrics
from consumer.settings import Settings

__all__ = ["OffsetCommitter"]

_log = get_logger(__name__)


class OffsetCommitter:
    """Commits handed offsets for the partitions ``is_ours`` still accepts.

    ``on_committed(offsets)`` is told after each successful commit.
    """

    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        metrics: ServiceMetrics,
        is_ours: Callable[[TopicPartition], bool],
        on_committed: Callable[[dict[TopicPartition, int]], None],
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._metrics = metrics
        self._is_ours = is_ours
        self._on_committed = on_committed
        #: Offsets handed over and not yet committed (newest per partition).
        self._to_commit: dict[TopicPartition, int] = {}
        #: The newest offset handed over per partition (committed or not).
        self._handed: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None

    def hand(self, offsets: dict[TopicPartition, int]) -> None:
        """Queue a finished batch's offsets; start committing if idle.

        Raises the error that ended the previous commit task for good (a configuration error:
        Kafka refused this client's commits), so the loop stops.
        """
        task = self._task
        if task is not None and task.done():
            self._task = None
            task.result()
        # Batches finish in fetch order, so per partition the newest offset is the greatest.
        self._to_commit.update(offsets)
        self._handed.update(offsets)
        if self._task is None and self._to_commit:
            self._task = asyncio.create_task(self._commit_until_drained())

    def hand_positions(self, positions: dict[TopicPartition, int]) -> None:
        """Hand the consumer's positions of partitions where they passed what batches handed.

        A position moves past records no batch returns: those of aborted transactions and the
        transaction markers. Without this, a partition whose last records are such (every
        transactional producer ends with a marker) keeps a committed offset below its end,
        a lag that never goes away. Call it only with no batch in hand: everything before a
        position has then been handled.
        """
        # A position of 0 has passed nothing: no commit of an empty partition.
        ahead = {tp: at for tp, at in positions.items() if at > self._handed.get(tp, 0)}
        if ahead:
            self.hand(ahead)

    async def drain(self) -> None:
        """Wait until everything handed so far is committed (or dropped as no longer ours)."""
        task = self._task
        if task is not None:
            await asyncio.wait({task})
            if task is self._task:
                self._task = None
                task.result()

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop what was handed for ``partitions`` (revoked): the new owner rereads them."""
        for tp in partitions:
            self._to_commit.pop(tp, None)
            self._handed.pop(tp, None)

    async def close(self, *, timeout_s: float) -> None:
        """Drain within ``timeout_s``; what could not be committed is logged, then given up."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.drain()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        left = {tp: o for tp, o in self._to_commit.items() if self._is_ours(tp)}
        if left:
            _log.warning(
                "offsets.commit_abandoned",
                partitions=partition_names(set(left)),
                detail="not committed before exit: those records are redelivered",
            )

    async def _commit_until_drained(self) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            try:
                await self._commit(offsets)
            except BaseException:
                # Not committed: keep them for the next attempt, unless newer ones came.
                for tp, offset in offsets.items():
                    self._to_commit.setdefault(tp, offset)
                raise

    async def _commit(self, handed: dict[TopicPartition, int]) -> None:
        async for attempt in retrying(self._settings):
            with attempt:
                offsets = {tp: o for tp, o in handed.items() if self._is_ours(tp)}
                if len(offsets) < len(handed):
                    _log.info(
                        "offsets.commit_skipped",
                        partitions=partition_names(set(handed) - set(offsets)),
                        detail="revoked while in hand; the new owner rereads these records",
                    )
                if not offsets:
                    return
                await self._commit_once(offsets)

    async def _commit_once(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await asyncio.wait_for(
                self._consumer.commit(offsets), self._settings.kafka_commit_timeout_s
            )
        except FATAL_KAFKA_ERRORS as exc:
            raise ConfigurationError(f"Kafka refused the offset commit: {exc!r}") from exc
        except (CommitFailedError, RebalanceInProgressError, IllegalStateError) as exc:
            # A rebalance under way: the partitions still ours after it are committed then.
            raise BrokerUnavailable(
                f"offset commit refused during a rebalance: {describe_error(exc)}",
                operation="commit",
            ) from exc
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"offset commit not answered within {self._settings.kafka_commit_timeout_s} s",
                operation="commit",
            ) from exc
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(
                f"offset commit failed: {describe_error(exc)}", operation="commit"
            ) from exc
        now = time.time()
        for tp, offset in offsets.items():
            self._metrics.committed_offset.labels(topic=tp.topic, partition=str(tp.partition)).set(
                offset
            )
        self._metrics.last_commit_timestamp.set(now)
        self._on_committed(offsets)
