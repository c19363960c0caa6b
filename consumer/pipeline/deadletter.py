"""Dead letters: rejected records, byte for byte, on the dead-letter topic (docs/contract.md §3).

A dead letter keeps the original record's key, value and headers, and adds the ``dlq.*``
headers of the contract: reason, error (names the field), source topic, partition, offset,
record time (ms) and consumer group. The caller's producer is ``acks=all``
(:func:`new_dead_letter_producer`): a letter counts as written only once every in-sync replica
has it, because the source offset is committed right after.

A letter the broker or the producer refuses for its size would fail the same way forever and
block its partition. It is written again alone (the broker refuses whole batches), then with
no value and none of the original headers (``dlq.value-omitted`` = the value's size,
``dlq.headers-omitted`` = how many were left out); the original record stays on its topic
until retention. Copied headers are capped in total size for the same reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from consumer.errors import BrokerUnavailable, describe_error
from consumer.kafka import client_options, is_record_too_large, is_transient_kafka_error
from consumer.logs import get_logger
from consumer.settings import Settings

__all__ = [
    "DLQ_HEADER_PREFIX",
    "HEADERS_OMITTED_HEADER",
    "MAX_COPIED_HEADER_BYTES",
    "REDRIVE_COUNT_HEADER",
    "REDRIVE_OF_HEADER",
    "VALUE_OMITTED_HEADER",
    "DeadLetter",
    "DeadLetterWriter",
    "PendingDeadLetters",
    "dead_letter_headers",
    "new_dead_letter_producer",
]

_log = get_logger(__name__)

#: Every header this service adds starts with this; the original record's own ``dlq.*``
#: headers are not copied (they would contradict the new ones), except redrive's below.
DLQ_HEADER_PREFIX: Final = "dlq."
#: Put by ``dlq redrive`` on a record it republishes, and copied into that record's next dead
#: letter, so redrive can count the attempts and stop.
REDRIVE_COUNT_HEADER: Final = "dlq.redrive-count"
REDRIVE_OF_HEADER: Final = "dlq.redrive-of"
#: On a letter written without its value: the value's size in bytes.
VALUE_OMITTED_HEADER: Final = "dlq.value-omitted"
#: On a letter written without (some of) the original headers: how many were left out.
HEADERS_OMITTED_HEADER: Final = "dlq.headers-omitted"
#: The original headers copied into a letter take at most this many bytes (names and values);
#: the rest are left out, so a hostile header cannot push every letter over the topic's limit.
MAX_COPIED_HEADER_BYTES: Final = 64 * 1024
#: ``dlq.error`` longer than this is cut (with a marker): a message is for people.
_MAX_ERROR_CHARS: Final = 4000
_KEPT_DLQ_HEADERS: Final = frozenset({REDRIVE_COUNT_HEADER, REDRIVE_OF_HEADER})


def new_dead_letter_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A (not yet started) producer for dead letters and for records republished from them.

    ``acks="all"``; ``max_request_size`` fits a record of ``settings.max_payload_bytes`` and its
    headers. Not idempotent, on purpose: aiokafka does not reset an idempotent producer's
    sequence numbers after the broker refuses a batch for its size, so every later letter to
    that partition would fail for good. A retried send may duplicate a letter, which is
    harmless (dead letters and redrive are at least once; the consumer is idempotent).
    ``overrides`` go to :class:`~aiokafka.AIOKafkaProducer` and win.
    """
    options: dict[str, Any] = {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": False,
        "max_request_size": max(1_048_576, 2 * settings.max_payload_bytes),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record to dead-letter, with its reason code and message."""

    record: ConsumerRecord[Any, Any]
    reason: str
    error: str


def _copied_headers(record: ConsumerRecord[Any, Any]) -> tuple[list[tuple[str, bytes]], int]:
    """The record's own headers to keep (within the byte budget), and how many were left out."""
    kept: list[tuple[str, bytes]] = []
    left_out, budget = 0, MAX_COPIED_HEADER_BYTES
    for name, value in record.headers or ():
        if name.startswith(DLQ_HEADER_PREFIX) and name not in _KEPT_DLQ_HEADERS:
            continue
        size = len(name.encode()) + len(value or b"")
        if size > budget:
            left_out += 1
            continue
        budget -= size
        kept.append((name, bytes(value or b"")))
    return kept, left_out


def dead_letter_headers(
    record: ConsumerRecord[Any, Any],
    reason: str,
    error: str,
    group_id: str,
    *,
    stripped: bool = False,
) -> list[tuple[str, bytes]]:
    """The headers of the dead letter of ``record``: its own (within the budget), then ours.

    ``stripped``: none of the record's own headers, and ``dlq.value-omitted`` (the letter is
    written without its value).
    """
    if len(error) > _MAX_ERROR_CHARS:
        error = error[: _MAX_ERROR_CHARS - 1] + "…"
    copied: list[tuple[str, bytes]] = []
    if stripped:
        left_out = len(record.headers or ())
    else:
        copied, left_out = _copied_headers(record)
    headers = [
        *copied,
        ("dlq.reason", str(reason).encode()),
        ("dlq.error", error.encode("utf-8", errors="replace")),
        ("dlq.topic", record.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
        ("dlq.timestamp", str(record.timestamp).encode()),
        ("dlq.group", group_id.encode()),
    ]
    if left_out:
        headers.append((HEADERS_OMITTED_HEADER, str(left_out).encode()))
    if stripped:
        headers.append((VALUE_OMITTED_HEADER, str(len(record.value or b"")).encode()))
    return headers


class DeadLetterWriter:
    """Writes dead letters to ``topic`` through the caller's ``acks=all`` producer."""

    def __init__(self, producer: AIOKafkaProducer, *, topic: str, group_id: str) -> None:
        self._producer = producer
        self._topic = topic
        self._group_id = group_id

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        """Write ``letters`` and wait for every acknowledgement.

        Raises :class:`~consumer.errors.BrokerUnavailable` (retriable) when some failed for a
        reason that clears by itself; its ``pending`` are the letters to write again. Any other
        failure propagates (a bug or a configuration error: nothing may be committed).
        """
        sent: list[tuple[DeadLetter, asyncio.Future[Any]]] = []
        failed: list[tuple[DeadLetter, BaseException]] = []
        for n, letter in enumerate(letters):
            try:
                sent.append((letter, await self._queue(letter)))
            except Exception as exc:
                # No metadata for the topic (the broker is unreachable): the rest would wait
                # for the same timeout one by one.
                failed = [(rest, exc) for rest in letters[n:]]
                break
        for letter, future in sent:
            try:
                await self._deliver(letter, future)
            except Exception as exc:
                failed.append((letter, exc))
        for _, problem in failed:
            if not is_transient_kafka_error(problem):
                raise problem
        if failed:
            error = PendingDeadLetters(
                f"{len(failed)} dead letter(s) not acknowledged: {describe_error(failed[0][1])}",
                operation="dead_letter",
            )
            error.pending = [letter for letter, _ in failed]
            raise error from failed[0][1]

    async def _produce(self, letter: DeadLetter, *, stripped: bool = False) -> asyncio.Future[Any]:
        record = letter.record
        headers = dead_letter_headers(
            record, letter.reason, letter.error, self._group_id, stripped=stripped
        )
        future: asyncio.Future[Any] = await self._producer.send(
            self._topic, value=None if stripped else record.value, key=record.key, headers=headers
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
        """Await ``future``; after a size refusal write the letter again alone (the broker
        refuses a whole batch: its neighbours may have been the cause), then stripped."""
        first = await _size_refusal(future)
        if first is None or await _size_refusal(await self._queue(letter)) is None:
            return
        record = letter.record
        await (await self._produce(letter, stripped=True))
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


class PendingDeadLetters(BrokerUnavailable):
    """Some dead letters were not acknowledged for a reason that clears by itself."""

    pending: list[DeadLetter]


async def _size_refusal(future: asyncio.Future[Any]) -> BaseException | None:
    """Await ``future``: None when delivered, the error when refused for its size; raise others."""
    try:
        await future
    except Exception as exc:
        if is_record_too_large(exc):
            return exc
        raise
    return None
