"""Kafka for one-shot operator commands: bounded, group-less, ``read_committed`` clients.

The commands (``lag``, ``replay``, ``dlq redrive``) read like ``run`` reads: only records of
committed transactions, and end offsets at the last stable offset (``docs/contract.md`` §3).
They never join a consumer group, never commit an offset and never create a topic. Every call
to the broker is bounded: a broker that does not answer raises
:class:`~consumer.errors.BrokerUnavailable` instead of hanging; a missing topic raises
:class:`~consumer.errors.MissingTopicsError`; a bad ``--partition`` raises
:class:`~consumer.errors.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from consumer.errors import BrokerUnavailable, ConfigurationError, describe_error
from consumer.kafka import ISOLATION_LEVEL, client_options, describe_partitions
from consumer.settings import Settings

__all__ = [
    "CALL_TIMEOUT_S",
    "STALL_TIMEOUT_S",
    "Clients",
    "OffsetRange",
    "bounded",
    "offset_range",
    "open_clients",
    "read_range",
    "timestamp_ms",
]

#: Bound of every admin or offset call: an unreachable broker gives an error, never a hang.
CALL_TIMEOUT_S: Final = 15.0
#: Reading fails when no record arrives for this long although some are still expected.
STALL_TIMEOUT_S: Final = 15.0
#: Errors of the Kafka client that mean "the broker did not answer as it should".
_KAFKA_FAULTS = (KafkaError, OSError, TimeoutError)


def timestamp_ms(moment: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@contextlib.asynccontextmanager
async def bounded(what: str, *, operation: str) -> AsyncIterator[None]:
    """Run the block within ``CALL_TIMEOUT_S``; a Kafka fault becomes ``BrokerUnavailable``.

    Its message is ``"<what>: <the fault>"`` (``"no answer within 15 s"`` for a timeout).
    """
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            yield
    except _KAFKA_FAULTS as exc:
        detail = (
            f"no answer within {CALL_TIMEOUT_S:g} s"
            if isinstance(exc, TimeoutError) and not str(exc)
            else describe_error(exc)
        )
        raise BrokerUnavailable(f"{what}: {detail}", operation=operation) from exc


class Clients:
    """An admin client and a group-less ``read_committed`` consumer of one command run."""

    def __init__(self, settings: Settings, **consumer_options: Any) -> None:
        options = client_options(settings)
        timeout_ms = int(CALL_TIMEOUT_S * 1000)
        self.admin = AIOKafkaAdminClient(**options, request_timeout_ms=timeout_ms)
        self.consumer = AIOKafkaConsumer(
            **options,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=ISOLATION_LEVEL,
            request_timeout_ms=timeout_ms,
            **consumer_options,
        )

    async def partitions(
        self, topics: Sequence[str], only: Sequence[int] | None = None
    ) -> list[TopicPartition]:
        """Every partition of ``topics`` (or those numbered ``only``, when given), sorted.

        Never creates a topic.

        Raises :class:`~consumer.errors.MissingTopicsError` naming the missing topics and
        :class:`~consumer.errors.ConfigurationError` when a partition of ``only`` exists in none.
        """
        tps = [
            tp
            for tp in await describe_partitions(self.admin, topics)
            if not only or tp.partition in only
        ]
        absent = sorted(set(only or ()) - {tp.partition for tp in tps})
        if absent:
            raise ConfigurationError(
                f"partition(s) {', '.join(map(str, absent))} exist in none of {', '.join(topics)}"
            )
        return tps


@contextlib.asynccontextmanager
async def open_clients(
    settings: Settings, *, operation: str, **consumer_options: Any
) -> AsyncIterator[Clients]:
    """Started :class:`Clients` for the block, stopped after it.

    Raises :class:`~consumer.errors.BrokerUnavailable` ("cannot reach Kafka at ...") when they
    cannot start within ``CALL_TIMEOUT_S``.
    """
    clients = Clients(settings, **consumer_options)
    try:
        async with bounded(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers}", operation=operation
        ):
            await clients.admin.start()
            await clients.consumer.start()
        yield clients
    finally:
        await clients.consumer.stop()
        await clients.admin.close()


class OffsetRange:
    """Offsets ``[starts[tp], ends[tp])`` of each partition, fixed when a command starts."""

    def __init__(self, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]):
        self.starts = starts
        self.ends = ends

    @property
    def size(self) -> int:
        """Offsets in the range (records, plus any transaction markers among them)."""
        return sum(max(0, self.ends[tp] - self.starts[tp]) for tp in self.starts)


async def offset_range(
    consumer: AIOKafkaConsumer,
    tps: Sequence[TopicPartition],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> OffsetRange:
    """From the log start (or the first record stamped at or after ``since``) to the end.

    The end is the last stable offset now, or the first offset stamped after ``until``. A
    partition with nothing at or after ``since`` starts at its end (nothing to read).
    """
    ends = dict(await consumer.end_offsets(list(tps)))
    if since is None:
        starts = dict(await consumer.beginning_offsets(list(tps)))
    else:
        found = await consumer.offsets_for_times({tp: timestamp_ms(since) for tp in tps})
        starts = {tp: found[tp].offset if found[tp] is not None else ends[tp] for tp in tps}
    if until is not None:
        after = await consumer.offsets_for_times({tp: timestamp_ms(until) + 1 for tp in tps})
        for tp in tps:
            if after[tp] is not None:
                ends[tp] = min(ends[tp], after[tp].offset)
    return OffsetRange(starts, ends)


async def read_range(
    consumer: AIOKafkaConsumer,
    span: OffsetRange,
    *,
    max_records: int = 5000,
    timeout_ms: int = 500,
) -> AsyncIterator[dict[TopicPartition, list[Any]]]:
    """Yield batches of the committed records of ``span``, partition by partition in order.

    Assigns ``consumer`` the partitions with something to read (a manual assignment: nothing is
    committed anywhere) and stops when every position has reached its end offset. Raises
    ``TimeoutError`` when no record arrives for ``STALL_TIMEOUT_S`` while some are still
    expected (broker gone, records deleted); time the caller spends on a batch does not count.
    """
    remaining = {tp for tp in span.starts if span.ends[tp] > span.starts[tp]}
    if not remaining:
        return
    consumer.assign(sorted(remaining))
    for tp in remaining:
        consumer.seek(tp, span.starts[tp])
    waiting_since: float | None = None
    while remaining:
        async with asyncio.timeout(STALL_TIMEOUT_S):
            fetched = await consumer.getmany(
                *sorted(remaining), timeout_ms=timeout_ms, max_records=max_records
            )
        if fetched:
            waiting_since = None
        elif waiting_since is None:
            waiting_since = time.monotonic()
        elif time.monotonic() - waiting_since > STALL_TIMEOUT_S:
            raise TimeoutError(f"no record for {STALL_TIMEOUT_S:g} s before the end offsets")
        batch: dict[TopicPartition, list[Any]] = {}
        for tp, records in fetched.items():
            kept = [r for r in records if r.offset < span.ends[tp]]
            if kept:
                batch[tp] = kept
        for tp in list(remaining):
            # position() also covers gaps (compaction, aborted records, transaction markers).
            if await consumer.position(tp) >= span.ends[tp]:
                remaining.discard(tp)
                consumer.pause(tp)
        if batch:
            yield batch
