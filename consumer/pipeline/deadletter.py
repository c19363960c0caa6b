"""Dead letters: rejected records, byte for byte, on the dead-letter topic with the §3 headers.

A dead letter keeps the original record's key and value bytes untouched and says why and where
from in UTF-8 headers: ``dlq.reason`` (a :class:`~schemas.codes.ReasonCode`), ``dlq.error`` (a
readable message naming the field), ``dlq.topic``, ``dlq.partition``, ``dlq.offset``,
``dlq.timestamp`` (the original record's time, ms) and ``dlq.group``.

The producer is the caller's and must be configured with ``acks="all"``, and not be idempotent
(see :func:`new_dead_letter_producer`, which builds it): a dead letter counts as written only when
every in-sync replica has it, because the source offset is committed right after.
:class:`DeadLetterWriter` never commits anything itself; it reports which letters failed so the
caller can retry them (:func:`is_transient_kafka_error` says which failures can clear).
:func:`new_dead_letter_producer` builds such a producer: the one place that configures it.

**A letter too large for the dead-letter topic** (the producer's ``max_request_size`` or the
topic's ``max.message.bytes``; e.g. a 1 MiB record rejected as ``payload_too_large``, plus its
headers) would fail the same way forever, so its batch could never be committed and its partition
would block. Such a letter is written again, alone and **without its value** (key kept), with the
header ``dlq.value-omitted`` = the original value's size in bytes; ``dlq.topic``/``partition``/
``offset`` still point at the original record, which stays on the source topic until retention.
It is logged as ``dead_letter.value_omitted`` (no payload): raise the topic's
``max.message.bytes``. Any other permanent producer error is reported as a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.structs import ConsumerRecord

from consumer.kafka import client_options
from consumer.logs import get_logger
from consumer.settings import Settings

__all__ = [
    "REDRIVE_HEADER_PREFIX",
    "VALUE_OMITTED_HEADER",
    "DeadLetter",
    "DeadLetterWriter",
    "dead_letter_headers",
    "is_record_too_large",
    "is_transient_kafka_error",
    "new_dead_letter_producer",
]

_log = get_logger(__name__)

#: Header values longer than this are cut (with a marker): a message is for humans, and a
#: pathological one must not push the dead letter over the broker's size limit.
_MAX_ERROR_CHARS = 4000


#: Headers that ``dlq redrive`` puts on a record it republishes (``dlq.redrive-count``,
#: ``dlq.redrive-of``); copied into the record's dead letter if it fails again, so redrive can
#: count the attempts and stop (see :mod:`consumer.ops.redrive`).
REDRIVE_HEADER_PREFIX = "dlq.redrive-"

#: Header of a dead letter written without its value because the value was too large for the
#: dead-letter topic; its value is the original value's size in bytes (UTF-8 decimal).
VALUE_OMITTED_HEADER = "dlq.value-omitted"


def new_dead_letter_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A (not yet started) producer for dead letters and for records republished from them.

    ``acks="all"``: a letter counts as written only once every in-sync replica has it.
    ``max_request_size`` covers a record of ``settings.max_payload_bytes`` with room for the
    headers (and at least Kafka's default 1 MiB), so a record the consumer accepts, or rejects
    as ``payload_too_large`` near the limit, fits. ``overrides`` (e.g. ``request_timeout_ms``)
    are passed to :class:`~aiokafka.AIOKafkaProducer` and win.

    Not idempotent, on purpose: aiokafka (0.14) does not reset an idempotent producer's
    sequence numbers after the broker refuses a batch (no KIP-360), so after one letter too
    large for the topic's ``max.message.bytes`` every later letter to that partition fails with
    ``OutOfOrderSequenceNumber`` (permanent): the partition would block until a restart, and
    block again on the same letter. Without idempotence a retried send may duplicate a letter,
    which is harmless: dead letters and redrive are at least once anyway, and the consumer
    applies events idempotently. (aiokafka keeps one request in flight per partition, so
    retries do not reorder.)
    """
    options: dict[str, Any] = {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": False,
        "max_request_size": max(1_048_576, 2 * settings.max_payload_bytes),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def dead_letter_headers(
    record: ConsumerRecord[Any, Any], reason: str, error: str, group_id: str
) -> list[tuple[str, bytes]]:
    """The §3 headers of the dead letter of ``record`` (values UTF-8 encoded), followed by the
    record's own ``dlq.redrive-*`` headers when it was republished by ``dlq redrive``."""
    if len(error) > _MAX_ERROR_CHARS:
        error = error[: _MAX_ERROR_CHARS - 1] + "…"
    redrive = [
        (name, bytes(value))
        for name, value in (record.headers or ())
        if name.startswith(REDRIVE_HEADER_PREFIX)
    ]
    return [
        ("dlq.reason", str(reason).encode()),
        ("dlq.error", error.encode("utf-8", errors="replace")),
        ("dlq.topic", record.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
        ("dlq.timestamp", str(record.timestamp).encode()),
        ("dlq.group", group_id.encode()),
        *redrive,
    ]


def is_record_too_large(exc: BaseException) -> bool:
    """True when the producer or the broker refused a record for its size (permanent)."""
    return isinstance(exc, (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError))


def is_transient_kafka_error(exc: BaseException) -> bool:
    """True when producing again later can succeed (broker down, leader moving, timeout)."""
    if isinstance(exc, KafkaTimeoutError):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, OSError)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record to dead-letter, with its reason code and message."""

    record: ConsumerRecord[Any, Any]
    reason: str
    error: str


class DeadLetterWriter:
    """Produces dead letters to ``topic`` through the caller's ``acks=all`` producer.

    :meth:`send` queues one letter and returns the future of its acknowledgement; :meth:`flush`
    awaits every queued letter. :meth:`write_all` does both for a list and returns the failures
    instead of raising, for the caller's retry loop. A letter refused for its size is written
    without its value (see the module docstring) by :meth:`flush` and :meth:`write_all`, which
    then count it as written.
    """

    def __init__(self, producer: AIOKafkaProducer, *, topic: str, group_id: str) -> None:
        self._producer = producer
        self._topic = topic
        self._group_id = group_id
        self._pending: list[tuple[DeadLetter, asyncio.Future[Any]]] = []

    @property
    def topic(self) -> str:
        """The dead-letter topic."""
        return self._topic

    async def _produce(
        self, letter: DeadLetter, *, omit_value: bool = False
    ) -> asyncio.Future[Any]:
        record = letter.record
        headers = dead_letter_headers(record, letter.reason, letter.error, self._group_id)
        if omit_value:
            headers.append((VALUE_OMITTED_HEADER, str(len(record.value or b"")).encode()))
        future: asyncio.Future[Any] = await self._producer.send(
            self._topic,
            value=None if omit_value else record.value,
            key=record.key,
            headers=headers,
        )
        return future

    async def _queue(self, letter: DeadLetter) -> asyncio.Future[Any]:
        """:meth:`_produce`, with a size refusal by the producer itself returned as a failed
        future (handled when awaited, like the broker's) instead of raised."""
        try:
            return await self._produce(letter)
        except Exception as exc:
            if not is_record_too_large(exc):
                raise
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def _deliver(self, letter: DeadLetter, future: asyncio.Future[Any]) -> None:
        """Await ``future``; when the letter was refused for its size, write it again alone
        (the broker refuses a whole batch: the letter may have been refused for its
        neighbours), then without its value. Raises what the last attempt raised."""
        first = await _size_refusal(future)
        if first is None or await _size_refusal(await self._queue(letter)) is None:
            return
        record = letter.record
        await (await self._produce(letter, omit_value=True))
        _log.error(
            "dead_letter.value_omitted",
            dlq_topic=self._topic,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=letter.reason,
            value_bytes=len(record.value or b""),
            error=type(first).__name__,
            hint="raise max.message.bytes of the dead-letter topic (and max_request_size)",
        )

    async def send(self, record: ConsumerRecord[Any, Any], reason: str, error: str) -> Any:
        """Queue the dead letter of ``record``; return the future of its first delivery attempt.

        That future fails when the letter is refused for its size; :meth:`flush` then writes it
        without its value. Raises what :meth:`AIOKafkaProducer.send` raises for other reasons
        (e.g. ``KafkaTimeoutError`` when the topic's metadata cannot be fetched); the letter is
        then not queued.
        """
        letter = DeadLetter(record, reason, error)
        future = await self._queue(letter)
        self._pending.append((letter, future))
        return future

    async def flush(self) -> list[tuple[DeadLetter, BaseException]]:
        """Await every letter queued by :meth:`send`; return those that failed, with the error."""
        pending, self._pending = self._pending, []
        return await self._failures(pending)

    async def write_all(
        self, letters: Sequence[DeadLetter]
    ) -> list[tuple[DeadLetter, BaseException]]:
        """Send ``letters`` and await them all; return the ones that failed, with the error.

        Independent of :meth:`send`/:meth:`flush`. When a letter cannot even be queued (no
        metadata for the topic: the broker is unreachable), it and the letters after it are
        reported failed with that error, rather than each waiting for the same timeout.
        """
        sent: list[tuple[DeadLetter, asyncio.Future[Any]]] = []
        unsent: list[tuple[DeadLetter, BaseException]] = []
        for n, letter in enumerate(letters):
            try:
                sent.append((letter, await self._queue(letter)))
            except Exception as exc:
                unsent = [(rest, exc) for rest in letters[n:]]
                break
        return [*await self._failures(sent), *unsent]

    async def _failures(
        self, pending: Sequence[tuple[DeadLetter, asyncio.Future[Any]]]
    ) -> list[tuple[DeadLetter, BaseException]]:
        failures: list[tuple[DeadLetter, BaseException]] = []
        for letter, future in pending:
            try:
                await self._deliver(letter, future)
            except Exception as exc:  # reported to the caller, who decides to retry or stop
                failures.append((letter, exc))
        return failures


async def _size_refusal(future: asyncio.Future[Any]) -> BaseException | None:
    """Await ``future``: None when delivered, the error when refused for its size; raise others."""
    try:
        await future
    except Exception as exc:
        if is_record_too_large(exc):
            return exc
        raise
    return None
