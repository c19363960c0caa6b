"""Dead letters on the real broker: original key and bytes, the §3 headers, failures reported."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from aiokafka.structs import ConsumerRecord

from consumer.kafka import is_record_too_large, is_transient_kafka_error
from consumer.ops.redrive import redrive
from consumer.pipeline.deadletter import (
    HEADERS_OMITTED_HEADER,
    MAX_COPIED_HEADER_BYTES,
    VALUE_OMITTED_HEADER,
    DeadLetter,
    DeadLetterWriter,
    dead_letter_headers,
    new_dead_letter_producer,
)
from consumer.settings import Settings
from tests.apply_helpers import (
    by_offset,
    create_topic_with,
    fetch,
    headers_of,
    produce,
    read_topic,
)
from tests.conftest import Services, Topics, unique


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

    await writer.write(
        [
            DeadLetter(records[0], "invalid_json", "line 1: expecting value"),
            DeadLetter(records[1], "invalid_json", "not UTF-8"),
            DeadLetter(records[2], "not_an_object", "the top level is an array (ü)"),
        ]
    )

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


async def test_a_letter_too_large_for_the_producer_is_written_without_its_value(
    services: Services, topics: Topics
) -> None:
    await produce(
        services.kafka_bootstrap,
        [(topics.costs, b"small", b'{"a": 1'), (topics.costs, b"big", b"x" * 5000)],
    )
    batch = await fetch(services.kafka_bootstrap, [topics.costs], 2)
    small_record, big_record = sorted(by_offset(batch).values(), key=lambda r: r.offset)
    # A producer whose request limit is below the big record: that letter can never be written
    # with its value, and must not block the batch forever.
    small = AIOKafkaProducer(
        bootstrap_servers=services.kafka_bootstrap, acks="all", max_request_size=1024
    )
    await small.start()
    try:
        writer = DeadLetterWriter(small, topic=topics.dlq, group_id="g")
        await writer.write(
            [
                DeadLetter(big_record, "payload_too_large", "too big"),
                DeadLetter(small_record, "invalid_json", "truncated"),
            ]
        )
    finally:
        await small.stop()

    letters = {r.key: r for r in await read_topic(services.kafka_bootstrap, topics.dlq)}
    assert letters[b"big"].value is None
    assert headers_of(letters[b"big"])[VALUE_OMITTED_HEADER] == "5000"
    assert headers_of(letters[b"big"])["dlq.offset"] == str(big_record.offset)
    assert headers_of(letters[b"big"])["dlq.reason"] == "payload_too_large"
    assert letters[b"small"].value == b'{"a": 1'
    assert VALUE_OMITTED_HEADER not in headers_of(letters[b"small"])


async def test_a_letter_too_large_even_without_its_value_is_reported_not_lost(
    services: Services, topics: Topics
) -> None:
    await produce(services.kafka_bootstrap, [(topics.costs, b"k" * 5000, b"{}")])
    [record] = by_offset(await fetch(services.kafka_bootstrap, [topics.costs], 1)).values()
    small = AIOKafkaProducer(
        bootstrap_servers=services.kafka_bootstrap, acks="all", max_request_size=1024
    )
    await small.start()
    try:
        writer = DeadLetterWriter(small, topic=topics.dlq, group_id="g")
        # Not retriable: a bug or a configuration error, which stops the consumer loudly.
        with pytest.raises(MessageSizeTooLargeError) as raised:
            await writer.write([DeadLetter(record, "invalid_json", "no")])
    finally:
        await small.stop()

    assert not is_transient_kafka_error(raised.value)
    assert await read_topic(services.kafka_bootstrap, topics.dlq) == []


async def test_the_dead_letter_producer_takes_a_letter_of_the_largest_accepted_record(
    services: Services, topics: Topics
) -> None:
    # A DLQ topic that takes 3 MiB records, and a record of just over 1 MiB (Kafka's default
    # request size): only a producer sized for a 2 MiB payload limit can write it whole.
    dlq = unique("dlq-big")
    await create_topic_with(services.kafka_bootstrap, dlq, {"max.message.bytes": "3145728"})
    await produce(services.kafka_bootstrap, [(topics.costs, b"k", b"{}")])
    [small] = by_offset(await fetch(services.kafka_bootstrap, [topics.costs], 1)).values()
    value = b"x" * (1_048_576 + 10_000)
    record = dataclasses.replace(small, value=value)
    sizes: list[int | None] = []
    for limit in (1024, 2 * 1_048_576):
        settings = Settings(
            kafka_bootstrap_servers=services.kafka_bootstrap, max_payload_bytes=limit
        )
        made = new_dead_letter_producer(settings)
        await made.start()
        try:
            writer = DeadLetterWriter(made, topic=dlq, group_id="g")
            await writer.write([DeadLetter(record, "payload_too_large", "big")])
        finally:
            await made.stop()
        letters = await read_topic(services.kafka_bootstrap, dlq)
        [letter] = [r for r in letters if r.offset == max(r.offset for r in letters)]
        sizes.append(None if letter.value is None else len(letter.value))

    # 1 KiB limit: the producer's 1 MiB request size refuses the letter, written without its
    # value; 2 MiB limit: the request size follows and the letter keeps its bytes.
    assert sizes == [None, len(value)]


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


def _record(headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="routing.costs",
        partition=0,
        offset=7,
        timestamp=1767268800123,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        headers=headers,
    )


def test_a_dead_letter_keeps_the_records_own_headers_but_not_its_stale_dlq_ones() -> None:
    record = _record(
        [
            ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("dlq.reason", b"invalid_json"),  # of an earlier failure: replaced by ours
            ("dlq.redrive-count", b"1"),  # redrive's own count: kept, so it can stop
        ]
    )

    headers = dead_letter_headers(record, "db_rejected", "no", "g")

    names = [name for name, _ in headers]
    assert names[:2] == ["traceparent", "dlq.redrive-count"]
    assert names.count("dlq.reason") == 1
    assert dict(headers)["dlq.reason"] == b"db_rejected"


def test_copied_headers_are_capped_so_a_hostile_one_cannot_inflate_every_letter() -> None:
    big = ("x-huge", b"h" * MAX_COPIED_HEADER_BYTES)
    record = _record([("traceparent", b"t"), big, ("dlq.redrive-of", b"r" * 100)])

    headers = dict(dead_letter_headers(record, "invalid_json", "no", "g"))

    assert "x-huge" not in headers
    assert headers["traceparent"] == b"t"
    assert headers["dlq.redrive-of"] == b"r" * 100
    assert headers[HEADERS_OMITTED_HEADER] == b"1"


async def test_a_letter_refused_for_its_copied_headers_is_written_without_them(
    services: Services, topics: Topics, producer: AIOKafkaProducer
) -> None:
    # A topic that takes records of at most ~20 KB, and a record whose own headers (within the
    # copy budget) push its letter over that: the broker refuses it whole and again alone;
    # it must not block the partition, so it goes with neither value nor copied headers.
    dlq = unique("dlq-small")
    await create_topic_with(services.kafka_bootstrap, dlq, {"max.message.bytes": "20000"})
    big_header = ("x-trace-baggage", b"b" * 30_000)
    await produce(services.kafka_bootstrap, [(topics.costs, b"k", b"[]")])
    [source] = by_offset(await fetch(services.kafka_bootstrap, [topics.costs], 1)).values()
    record = dataclasses.replace(source, headers=[("traceparent", b"t"), big_header])
    writer = DeadLetterWriter(producer, topic=dlq, group_id="g")

    await writer.write([DeadLetter(record, "not_an_object", "an array")])

    [letter] = await read_topic(services.kafka_bootstrap, dlq)
    headers = headers_of(letter)
    assert letter.value is None
    assert letter.key == b"k"
    assert "x-trace-baggage" not in headers
    assert "traceparent" not in headers
    assert headers[VALUE_OMITTED_HEADER] == "2"
    assert headers[HEADERS_OMITTED_HEADER] == "2"
    assert headers["dlq.reason"] == "not_an_object"
    assert headers["dlq.offset"] == str(source.offset)


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


@pytest.mark.parametrize(
    ("error", "too_large"),
    [
        (MessageSizeTooLargeError(), True),
        (RecordListTooLargeError(), True),
        (RecordTooLargeError(), True),
        (KafkaTimeoutError(), False),
        (TopicAuthorizationFailedError(), False),
        (ValueError("bug"), False),
    ],
)
def test_which_produce_errors_mean_the_record_is_too_large(
    error: BaseException, too_large: bool
) -> None:
    assert is_record_too_large(error) is too_large


async def test_redrive_republishes_a_record_of_the_largest_accepted_size(
    services: Services,
) -> None:
    # With a 2 MiB payload limit, a record of just over 1 MiB (Kafka's default request size) is
    # valid; redrive must be able to send it back, as the consumer could dead-letter it.
    base = unique("big")
    big_topic = {"max.message.bytes": "3145728"}
    settings = Settings(
        kafka_bootstrap_servers=services.kafka_bootstrap,
        topic_snapshots=f"{base}.snapshots",
        topic_costs=f"{base}.costs",
        topic_policies=f"{base}.policies",
        topic_dlq=f"{base}.dlq",
        max_payload_bytes=2 * 1_048_576,
    )
    for name in (settings.topic_costs, settings.topic_dlq):
        await create_topic_with(services.kafka_bootstrap, name, big_topic)
    value = b'{"pad": "' + b"x" * (1_048_576 + 10_000) + b'"}'
    producer = new_dead_letter_producer(settings)
    await producer.start()
    try:
        await (await producer.send(settings.topic_costs, value, key=b"req-big", partition=0))
        [record] = by_offset(
            await fetch(services.kafka_bootstrap, [settings.topic_costs], 1)
        ).values()
        writer = DeadLetterWriter(producer, topic=settings.topic_dlq, group_id="g")
        await writer.write([DeadLetter(record, "tenant_mismatch", "x")])
    finally:
        await producer.stop()

    code = await redrive(settings)

    assert code == 0
    costs = await read_topic(services.kafka_bootstrap, settings.topic_costs)
    assert [(r.key, r.value) for r in costs] == [(b"req-big", value)] * 2


async def test_redrive_refuses_a_dead_letter_written_without_its_value(
    services: Services, topics: Topics
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=services.kafka_bootstrap,
        topic_snapshots=topics.snapshots,
        topic_costs=topics.costs,
        topic_policies=topics.policies,
        topic_dlq=topics.dlq,
    )
    await produce(
        services.kafka_bootstrap, [(topics.costs, b"big", b"x" * 5000), (topics.costs, b"k", b"[")]
    )
    records = sorted(
        by_offset(await fetch(services.kafka_bootstrap, [topics.costs], 2)).values(),
        key=lambda r: r.offset,
    )
    small = AIOKafkaProducer(
        bootstrap_servers=services.kafka_bootstrap, acks="all", max_request_size=1024
    )
    await small.start()
    try:
        writer = DeadLetterWriter(small, topic=topics.dlq, group_id="g")
        letters = [DeadLetter(r, "invalid_json", "bad") for r in records]
        await writer.write(letters)
    finally:
        await small.stop()

    code = await redrive(settings)

    # Republishing the key alone would put a tombstone on the source topic: only the letter
    # that kept its bytes goes back.
    assert code == 0
    costs = await read_topic(services.kafka_bootstrap, topics.costs)
    assert [(r.key, r.value) for r in costs[2:]] == [(b"k", b"[")]
