"""The service's Prometheus metrics (docs/contract.md §6): one registry, the ``routing_`` prefix.

Every family lives in the :class:`ServiceMetrics` instance's own
:class:`~prometheus_client.CollectorRegistry` (never the process-global one), so two services in
one process (tests) never share or collide on series. Units are base units: seconds, records,
offsets. Per-partition series are removed when the partition is revoked, so a scrape shows only
what this instance owns. Lag gauges are written by the service's refresh timer, never computed
during a scrape.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from consumer import __version__
from consumer.outcomes import Outcome

# prometheus_client's own formatting of "le" values (untyped): the same labels as Histogram's.
_format_le = cast(Callable[[float], str], floatToGoString)

__all__ = ["CONTENT_TYPE", "BatchHistogram", "ServiceMetrics"]

#: ``Content-Type`` of :meth:`ServiceMetrics.render`: text format 0.0.4, which every Prometheus
#: version parses (the body uses no 1.0.0-only feature: names and labels are plain ASCII).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000, 50_000)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
_LATENCY_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    *(60.0, 300.0, 900.0, 3600.0, 21_600.0, 86_400.0),
)
_PARTITION_LABELS = ("topic", "partition")


class BatchHistogram(Collector):
    """A histogram observed a batch of values at a time (a Prometheus ``histogram`` family).

    Exposed exactly like :class:`prometheus_client.Histogram` with the same buckets
    (``_bucket{le=...}`` cumulative, ``_count``, ``_sum``), but :meth:`observe_many` sorts the
    batch once and counts each bucket with one bisection, where ``Histogram.observe`` takes a lock
    and walks the buckets in Python per value: on a backlog that was ~3 % of the consumer's CPU
    for the per-event latency alone. Thread-safe (scrapes run on the HTTP server's thread).
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(set(bounds)) or not bounds:
            raise ValueError("buckets must be distinct and increasing")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(bounds)
        self._counts = [0] * len(bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: list[float]) -> None:
        """Observe every value of ``values`` (sorted in place)."""
        if not values:
            return
        values.sort()
        total = math.fsum(values)
        with self._lock:
            below = 0
            for n, bound in enumerate(self._bounds):
                upto = bisect.bisect_right(values, bound, lo=below)
                self._counts[n] += upto - below
                below = upto
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        """The family as it stands (called by the registry on every scrape)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip(self._bounds, counts, strict=True):
            cumulative += count
            buckets.append((_format_le(bound), float(cumulative)))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=total
        )


class ServiceMetrics:
    """The ``routing_*`` families of one running service and the helpers that update them."""

    def __init__(self, version: str = __version__) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "routing_consumer_events_total",
            "Records handled, by source topic, event type and outcome.",
            ("topic", "type", "outcome"),
            registry=r,
        )
        self.dead_letters = Counter(
            "routing_consumer_dead_letters_total",
            "Records written to the dead-letter topic, by reason code.",
            ("reason",),
            registry=r,
        )
        self.released = Counter(
            "routing_consumer_released_total",
            "Held fields settled once their row appeared (applied, stale, dead_lettered) or "
            "dead-lettered as row_missing after the TTL (dead_lettered), by event type.",
            ("type", "outcome"),
            registry=r,
        )
        self.held_fields = Gauge(
            "routing_consumer_held_fields",
            "Snapshots and costs held until their ExecutionRecord row exists (the whole table, "
            "as every instance sees it: aggregate with max, not sum).",
            registry=r,
        )
        self.held_oldest_age_seconds = Gauge(
            "routing_consumer_held_oldest_age_seconds",
            "Age of the oldest held field (0 when none is held); refreshed on a timer.",
            registry=r,
        )
        self.lag_records = Gauge(
            "routing_consumer_lag_records",
            "Records between the group's committed offset and the log end, per partition.",
            _PARTITION_LABELS,
            registry=r,
        )
        self.lag_seconds = Gauge(
            "routing_consumer_lag_seconds",
            "Age of the oldest record not yet committed (0 when the lag is 0), per partition.",
            _PARTITION_LABELS,
            registry=r,
        )
        self.committed_offset = Gauge(
            "routing_consumer_committed_offset",
            "The group's committed offset (next record to read), per partition.",
            _PARTITION_LABELS,
            registry=r,
        )
        self.log_end_offset = Gauge(
            "routing_consumer_log_end_offset",
            "The partition's end offset (last stable offset under read_committed).",
            _PARTITION_LABELS,
            registry=r,
        )
        self.batch_size = Histogram(
            "routing_consumer_batch_size",
            "Records per fetched batch.",
            buckets=_BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "routing_consumer_batch_duration_seconds",
            "Time to decode, dead-letter and apply one batch (retries included).",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.end_to_end_latency = BatchHistogram(
            "routing_consumer_end_to_end_latency_seconds",
            "From an applied event's occurredAt to its commit in PostgreSQL.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.db_retries = Counter(
            "routing_consumer_db_retries_total",
            "Database transactions retried after a transient fault (unavailable, lock, race).",
            registry=r,
        )
        self.retries = Counter(
            "routing_consumer_retries_total",
            "Retries scheduled after a transient fault, by operation (database, dead_letter, "
            "commit, fetch, connect).",
            ("operation",),
            registry=r,
        )
        self.rebalances = Counter(
            "routing_consumer_rebalances_total",
            "Partition assignments received from the group coordinator.",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "routing_consumer_assigned_partitions",
            "Partitions currently assigned to this instance.",
            registry=r,
        )
        self.last_commit_timestamp = Gauge(
            "routing_consumer_last_commit_timestamp_seconds",
            "Unix time of the last successful offset commit (0: none yet); for stall alerts.",
            registry=r,
        )
        self.build_info = Gauge(
            "routing_build_info",
            "Always 1; the label says which version of routing-persistence runs.",
            ("version",),
            registry=r,
        )
        self.build_info.labels(version=version).set(1)

    def count_outcomes(self, outcomes: Mapping[tuple[str, str, Outcome], int]) -> None:
        """Add a batch's ``(topic, type, outcome) -> count`` to the events counter."""
        for (topic, event_type, outcome), count in outcomes.items():
            if count:
                self.events.labels(topic=topic, type=event_type, outcome=outcome.value).inc(count)

    def observe_latencies(
        self, occurred_at: Iterable[datetime], now: datetime | None = None
    ) -> None:
        """Observe ``now - occurredAt`` for each applied event (negative skew counts as 0)."""
        at = now or datetime.now(UTC)
        self.end_to_end_latency.observe_many(
            [max(0.0, (at - when).total_seconds()) for when in occurred_at]
        )

    def set_partition(
        self,
        tp: TopicPartition,
        *,
        end_offset: int,
        committed: int | None,
        lag: int,
        lag_seconds: float,
    ) -> None:
        """Write one partition's offsets and lag (``committed=None``: nothing committed yet)."""
        labels = {"topic": tp.topic, "partition": str(tp.partition)}
        self.log_end_offset.labels(**labels).set(end_offset)
        if committed is not None:
            self.committed_offset.labels(**labels).set(committed)
        self.lag_records.labels(**labels).set(lag)
        self.lag_seconds.labels(**labels).set(lag_seconds)

    def remove_partitions(self, tps: Iterable[TopicPartition]) -> None:
        """Drop the per-partition series of ``tps`` (revoked: another instance reports them)."""
        for tp in tps:
            values = (tp.topic, str(tp.partition))
            for gauge in (
                self.lag_records,
                self.lag_seconds,
                self.committed_offset,
                self.log_end_offset,
            ):
                with contextlib.suppress(KeyError):  # never written for this partition
                    gauge.remove(*values)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
