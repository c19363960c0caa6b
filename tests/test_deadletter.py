"""Dead letters on the real broker: original key and bytes, the §3 headers, failures reported."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    UnknownTopicOrPartitionError,
)
from aiokafka.structs import ConsumerRecord

from consumer.deadletter import (
    DeadLetter,
    DeadLetterWriter,
    dead_letter_headers,
    is_transient_kafka_error,
)
from tests.apply_helpers import by_offset, fetch, headers_of, produce, read_topic
from tests.conftest import Services, Topics


@pytest.fixture
async def producer(services: Services) -> AsyncIterator[AIOKafkaProducer]:
    made = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all")
    await made.start()
    yield made
    await made.stop()


async def test_dead_letters_keep_key_and_bytes_and_carry_the_contract_headers(
    services: Services, topics: Topics, producer: AIOKafkaProducer
) -> None:
    odd_bytes = b"\xff\xfe not json \x00"
    await produce(
        services.kafka_bootstrap,
        [
            (topics.costs, b"req-1", b'{"broken": '),
            (topics.costs, None, odd_bytes),
            (topics.costs, "clé-ü".encode(), b"[]"),
        ],
    )
    batch = await fetch(services.kafka_bootstrap, [topics.costs], 3)
    records = sorted(by_offset(batch).values(), key=lambda r: r.offset)
    writer = DeadLetterWriter(producer, topic=topics.dlq, group_id="g-1")

    failures = await writer.write_all(
        [
            DeadLetter(records[0], "invalid_json", "line 1: expecting value"),
            DeadLetter(records[1], "invalid_json", "not UTF-8"),
            DeadLetter(records[2], "not_an_object", "the top level is an array (ü)"),
        ]
    )

    assert failures == []
    letters = sorted(await read_topic(services.kafka_bootstrap, topics.dlq), key=_source_offset)
    assert [(letter.key, letter.value) for letter in letters] == [
        (b"req-1", b'{"broken": '),
        (None, odd_bytes),
        ("clé-ü".encode(), b"[]"),
    ]
    for letter, source in zip(letters, records, strict=True):
        headers = headers_of(letter)
        assert headers["dlq.topic"] == topics.costs
        assert headers["dlq.partition"] == str(source.partition)
        assert headers["dlq.offset"] == str(source.offset)
        assert headers["dlq.timestamp"] == str(source.timestamp)
        assert headers["dlq.group"] == "g-1"
    assert [headers_of(x)["dlq.reason"] for x in letters] == [
        "invalid_json",
        "invalid_json",
        "not_an_object",
    ]
    assert headers_of(letters[2])["dlq.error"] == "the top level is an array (ü)"


def _source_offset(record: ConsumerRecord[bytes, bytes]) -> int:
    return int(headers_of(record)["dlq.offset"])


async def test_send_then_flush_awaits_every_acknowledgement(
    services: Services, topics: Topics, producer: AIOKafkaProducer
) -> None:
    await produce(services.kafka_bootstrap, [(topics.snapshots, b"k", b"{}")] * 5)
    records = list(by_offset(await fetch(services.kafka_bootstrap, [topics.snapshots], 5)).values())
    writer = DeadLetterWriter(producer, topic=topics.dlq, group_id="g")

    futures = [await writer.send(r, "schema_violation", "payload: missing") for r in records]
    failures = await writer.flush()

    assert failures == []
    assert all(f.done() for f in futures)
    assert len(await read_topic(services.kafka_bootstrap, topics.dlq)) == 5


async def test_a_refused_dead_letter_is_reported_not_lost(
    services: Services, topics: Topics
) -> None:
    await produce(services.kafka_bootstrap, [(topics.costs, b"k", b"x" * 5000)])
    [record] = by_offset(await fetch(services.kafka_bootstrap, [topics.costs], 1)).values()
    # A producer whose request limit is below the record: delivery fails permanently.
    small = AIOKafkaProducer(
        bootstrap_servers=services.kafka_bootstrap, acks="all", max_request_size=1024
    )
    await small.start()
    try:
        writer = DeadLetterWriter(small, topic=topics.dlq, group_id="g")
        failures = await writer.write_all([DeadLetter(record, "payload_too_large", "too big")])
    finally:
        await small.stop()

    assert len(failures) == 1
    assert isinstance(failures[0][1], MessageSizeTooLargeError)
    assert not is_transient_kafka_error(failures[0][1])


def test_headers_are_utf8_and_a_huge_message_is_cut() -> None:
    record = ConsumerRecord(
        topic="routing.costs",
        partition=4,
        offset=1234,
        timestamp=1767268800123,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        headers=[],
    )
    headers = dict(dead_letter_headers(record, "rule_violation", "é" * 10_000, "grp"))

    assert set(headers) == {
        "dlq.reason",
        "dlq.error",
        "dlq.topic",
        "dlq.partition",
        "dlq.offset",
        "dlq.timestamp",
        "dlq.group",
    }
    assert headers["dlq.partition"] == b"4"
    assert headers["dlq.offset"] == b"1234"
    assert headers["dlq.timestamp"] == b"1767268800123"
    error = headers["dlq.error"].decode("utf-8")
    assert len(error) == 4000
    assert error.endswith("…")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (KafkaTimeoutError(), True),
        (KafkaConnectionError(), True),
        (NotLeaderForPartitionError(), True),
        (UnknownTopicOrPartitionError(), True),
        (MessageSizeTooLargeError(), False),
        (ConnectionResetError(), True),
        (ValueError("bug"), False),
    ],
)
def test_which_produce_errors_are_retried(error: BaseException, transient: bool) -> None:
    assert is_transient_kafka_error(error) is transient
