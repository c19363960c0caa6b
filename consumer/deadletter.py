"""Dead letters: rejected records, byte for byte, on the dead-letter topic with the §3 headers.

A dead letter keeps the original record's key and value bytes untouched and says why and where
from in UTF-8 headers: ``dlq.reason`` (a :class:`~schemas.codes.ReasonCode`), ``dlq.error`` (a
readable message naming the field), ``dlq.topic``, ``dlq.partition``, ``dlq.offset``,
``dlq.timestamp`` (the original record's time, ms) and ``dlq.group``.

The producer is the caller's and must be configured with ``acks="all"`` (and
``enable_idempotence=True`` where the broker allows it): a dead letter counts as written only when
every in-sync replica has it, because the source offset is committed right after.
:class:`DeadLetterWriter` never commits anything itself; it reports which letters failed so the
caller can retry them (:func:`is_transient_kafka_error` says which failures can clear).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.structs import ConsumerRecord

__all__ = [
    "REDRIVE_HEADER_PREFIX",
    "DeadLetter",
    "DeadLetterWriter",
    "dead_letter_headers",
    "is_transient_kafka_error",
]

#: Header values longer than this are cut (with a marker): a message is for humans, and a
#: pathological one must not push the dead letter over the broker's size limit.
_MAX_ERROR_CHARS = 4000


#: Headers that ``dlq redrive`` puts on a record it republishes (``dlq.redrive-count``,
#: ``dlq.redrive-of``); copied into the record's dead letter if it fails again, so redrive can
#: count the attempts and stop (see :mod:`consumer.redrive`).
REDRIVE_HEADER_PREFIX = "dlq.redrive-"


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
    instead of raising, for the caller's retry loop.
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

    async def _produce(self, letter: DeadLetter) -> asyncio.Future[Any]:
        record = letter.record
        future: asyncio.Future[Any] = await self._producer.send(
            self._topic,
            value=record.value,
            key=record.key,
            headers=dead_letter_headers(record, letter.reason, letter.error, self._group_id),
        )
        return future

    async def send(self, record: ConsumerRecord[Any, Any], reason: str, error: str) -> Any:
        """Queue the dead letter of ``record``; return the future of its acknowledgement.

        Raises what :meth:`AIOKafkaProducer.send` raises (e.g. ``KafkaTimeoutError`` when the
        topic's metadata cannot be fetched); the letter is then not queued.
        """
        letter = DeadLetter(record, reason, error)
        future = await self._produce(letter)
        self._pending.append((letter, future))
        return future

    async def flush(self) -> list[tuple[DeadLetter, BaseException]]:
        """Await every letter queued by :meth:`send`; return those that failed, with the error."""
        pending, self._pending = self._pending, []
        return await _failures(pending)

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
                sent.append((letter, await self._produce(letter)))
            except Exception as exc:
                unsent = [(rest, exc) for rest in letters[n:]]
                break
        return [*await _failures(sent), *unsent]


async def _failures(
    pending: Sequence[tuple[DeadLetter, asyncio.Future[Any]]],
) -> list[tuple[DeadLetter, BaseException]]:
    failures: list[tuple[DeadLetter, BaseException]] = []
    for letter, future in pending:
        try:
            await future
        except Exception as exc:  # reported to the caller, who decides to retry or stop
            failures.append((letter, exc))
    return failures
