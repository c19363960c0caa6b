"""The lag gauges of a running service, refreshed on a timer, never during a scrape.

Per assigned partition: the end offset (the last stable offset, ``read_committed``), the
group's committed offset, the lag in records and in seconds. Lag seconds is the age of the
oldest fetched record not yet committed (from the record's own timestamp); for a lag whose
records were not fetched yet, how long that lag has been seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from consumer.errors import describe_error
from consumer.logs import get_logger
from consumer.service.health import HealthState
from consumer.service.metrics import ServiceMetrics

__all__ = ["LagGauges"]

_log = get_logger(__name__)

#: Bound on each broker request of a refresh.
_PROBE_TIMEOUT_S: Final = 5.0


class LagGauges:
    """Keeps ``routing_consumer_lag_*`` and the offset gauges of the assigned partitions."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        metrics: ServiceMetrics,
        health: HealthState,
        *,
        assigned: Callable[[], set[TopicPartition]],
    ) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._health = health
        self._assigned = assigned
        #: The group's committed offset per partition: ours, or read once from the broker.
        self._committed: dict[TopicPartition, int] = {}
        #: Record time (Unix s) of the oldest fetched record not yet committed, per partition.
        self._pending_since: dict[TopicPartition, float] = {}
        #: When a lag was first seen with none of its records fetched yet (Unix s).
        self._lag_seen_since: dict[TopicPartition, float] = {}

    def fetched(self, tp: TopicPartition, first_timestamp_ms: int) -> None:
        """A batch brought records of ``tp``; the first is the oldest not yet committed."""
        self._pending_since.setdefault(tp, first_timestamp_ms / 1000)

    def committed_now(self, offsets: dict[TopicPartition, int]) -> None:
        """``offsets`` were committed: everything fetched of them so far is."""
        for tp, offset in offsets.items():
            self._committed[tp] = offset
            self._pending_since.pop(tp, None)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Revoked: another instance reports them now."""
        for tp in partitions:
            self._committed.pop(tp, None)
            self._pending_since.pop(tp, None)
            self._lag_seen_since.pop(tp, None)
        self._metrics.remove_partitions(partitions)

    async def refresh_forever(self, interval_s: float) -> None:
        """Refresh every ``interval_s``; a failure marks the broker unreachable until the next."""
        while True:
            try:
                await self.refresh()
            except TimeoutError:
                self._health.is_broker_reachable = False
                _log.warning("lag.refresh_failed", error=f"no answer within {_PROBE_TIMEOUT_S} s")
            except (KafkaError, OSError) as exc:
                self._health.is_broker_reachable = False
                _log.warning("lag.refresh_failed", error=describe_error(exc))
            except Exception:  # a bug here must not stop the gauges for good, nor the service
                _log.exception("lag.refresh_failed")
            await asyncio.sleep(interval_s)

    async def refresh(self) -> None:
        """Write the gauges from the broker's end offsets and the group's committed offsets."""
        consumer = self._consumer
        tps = sorted(self._assigned())
        if not tps:
            # Still a useful probe of the broker while the group gives us nothing.
            await asyncio.wait_for(consumer.topics(), _PROBE_TIMEOUT_S)
            self._health.is_broker_reachable = True
            return
        ends: dict[TopicPartition, int] = await asyncio.wait_for(
            consumer.end_offsets(tps), _PROBE_TIMEOUT_S
        )
        self._health.is_broker_reachable = True
        for tp in tps:
            if tp not in self._committed:
                found = await asyncio.wait_for(consumer.committed(tp), _PROBE_TIMEOUT_S)
                if found is not None and tp not in self._committed:
                    self._committed[tp] = found
        never = [tp for tp in tps if tp not in self._committed]
        starts: dict[TopicPartition, int] = (
            await asyncio.wait_for(consumer.beginning_offsets(never), _PROBE_TIMEOUT_S)
            if never
            else {}
        )
        now = time.time()
        assigned = self._assigned()
        for tp in tps:
            if tp not in assigned:
                continue  # revoked during the awaits above: its series are gone, keep them gone
            committed = self._committed.get(tp)
            lag = max(0, ends[tp] - (committed if committed is not None else starts.get(tp, 0)))
            if lag == 0:
                self._lag_seen_since.pop(tp, None)
                age = 0.0
            elif tp in self._pending_since:
                age = max(0.0, now - self._pending_since[tp])
            else:
                age = now - self._lag_seen_since.setdefault(tp, now)
            self._metrics.set_partition(
                tp, end_offset=ends[tp], committed=committed, lag=lag, lag_seconds=age
            )
