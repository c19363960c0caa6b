"""Publish events built by :func:`schemas.build_event` to their topics (aiokafka).

For Python producers and for this project's own tests, demo and benchmark: the topic is chosen by
the event's type from :class:`~consumer.settings.Settings`, the record key and value are the
event's exact bytes, and every send is acknowledged by all in-sync replicas (``acks="all"``,
idempotent producer, so a retried send is never written twice).

>>> async with EventPublisher(settings) as publisher:
...     await publisher.publish(build_event(EventType.COST, cost, tenant_id=t, request_id=r))
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from consumer.kafka import client_options
from consumer.settings import Settings
from schemas.build import OutgoingEvent
from schemas.codes import EventType

__all__ = ["EventPublisher", "PublishError"]

#: Throughput defaults: wait a few ms to fill batches of up to 256 KiB per partition.
DEFAULT_LINGER_MS = 5
DEFAULT_MAX_BATCH_SIZE = 256 * 1024


class PublishError(Exception):
    """Some events of :meth:`EventPublisher.publish_many` were not acknowledged.

    ``failed`` holds each such event with its error; every other event was acknowledged. The
    first error is the ``__cause__``. Publishing the failed events again is safe for the consumer
    (events are idempotent), though the idempotent producer cannot dedupe across calls.
    """

    def __init__(self, failed: list[tuple[OutgoingEvent, BaseException]], total: int) -> None:
        first = failed[0][1]
        super().__init__(
            f"{len(failed)} of {total} events were not acknowledged; first error: "
            f"{type(first).__name__}: {first}"
        )
        self.failed = failed


class EventPublisher:
    """An async context manager around one started, idempotent ``acks="all"`` AIOKafkaProducer.

    ``producer_options`` override the defaults passed to ``AIOKafkaProducer`` (for instance
    ``compression_type="zstd"`` or ``max_request_size``); connection and security options come
    from :func:`consumer.kafka.client_options`. Entering raises aiokafka's connection errors
    (``KafkaConnectionError``) when no broker answers.
    """

    def __init__(self, settings: Settings, **producer_options: Any) -> None:
        self._topics = {
            EventType.SNAPSHOT: settings.topic_snapshots,
            EventType.COST: settings.topic_costs,
            EventType.POLICY: settings.topic_policies,
        }
        options: dict[str, Any] = {
            **client_options(settings),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": DEFAULT_LINGER_MS,
            "max_batch_size": DEFAULT_MAX_BATCH_SIZE,
        }
        options.update(producer_options)
        self._options = options
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> EventPublisher:
        producer = AIOKafkaProducer(**self._options)
        await producer.start()
        self._producer = producer
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is still buffered

    def topic_for(self, event_type: EventType) -> str:
        """The topic of ``event_type`` in the settings this publisher was built with."""
        return self._topics[event_type]

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(
                "EventPublisher is not started: use `async with EventPublisher(...)`"
            )
        return self._producer

    async def publish(self, event: OutgoingEvent) -> None:
        """Send one event and wait for its acknowledgement (raises aiokafka's ``KafkaError``)."""
        producer = self._started()
        await producer.send_and_wait(self.topic_for(event.type), event.value, key=event.key)

    async def publish_many(self, events: Iterable[OutgoingEvent]) -> int:
        """Send every event (batched by the producer), then wait for all acknowledgements.

        Events of one key go to one partition in iteration order. Returns how many were sent and
        acknowledged; raises :class:`PublishError` listing the failed ones otherwise (after every
        acknowledgement or error is in, so nothing is left in flight).
        """
        producer = self._started()
        sent: list[tuple[OutgoingEvent, asyncio.Future[Any]]] = []
        try:
            for event in events:
                future = await producer.send(self.topic_for(event.type), event.value, key=event.key)
                sent.append((event, future))
        except BaseException:
            # e.g. a record over max_request_size: let those already sent finish, then raise.
            await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            raise
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        failed = [
            (event, result)
            for (event, _), result in zip(sent, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if failed:
            raise PublishError(failed, len(sent)) from failed[0][1]
        return len(sent)
