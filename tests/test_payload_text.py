"""PostgreSQL stores from the consumer's payload text exactly what it stored from the whole
record, and refuses exactly the records it refused (CONTRACT §3 "exact payloads").

Each batch is applied twice on a real, migrated PostgreSQL: as the consumer hands it over
(``PendingEvent.of``: the payload's JSON text when it stands alone, else the whole record) and
the way every record used to go (the whole record's text, ``(record::jsonb) -> 'payload'``,
undone). Verdicts, rejection messages and the stored JSON must be the same.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcomes import Outcome
from consumer.pipeline.apply import EventResult, PendingEvent, apply_events
from consumer.pipeline.decode import ConsumerEvent
from consumer.pipeline.decode import decode_event as fast_decode_event
from consumer.pipeline.sql import SEPARATOR
from consumer.settings import MissingRowPolicy
from schemas import DecodedEvent, EventType, ReasonCode, decode_event
from tests.apply_helpers import at, cost, engine_for, policy, snapshot, with_raw_payload
from tests.conftest import Database


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    made = engine_for(database.url)
    yield made
    await made.dispose()


def _duplicate_payload(value: bytes, first_x: str) -> bytes:
    """``value`` with a first "payload" key before its own: its payload plus ``"x": first_x``."""
    doc = json.loads(value)
    first = json.dumps(dict(doc["payload"], x="@")).replace('"@"', first_x)
    return b'{"payload":' + first.encode() + b"," + value[1:]


def _with_x(request: str, literal: str) -> bytes:
    """A valid cost whose payload has ``"x": <literal>`` (JSON text, exactly)."""
    return with_raw_payload(cost(request, "t1", at(0), x="N"), "N", literal).value


def _policy_request(tenant: str, request_literal: str) -> bytes:
    """A valid policy of ``tenant`` with ``"requestId": <request_literal>`` (which it keeps)."""
    value = policy(tenant, at(0)).value
    return value[:-1] + b',"requestId":' + request_literal.encode() + b"}"


def _cases() -> list[tuple[str, bytes, bool]]:
    """(name, record, whether the payload's text alone is sent): valid records, one row each."""
    numbers = "[1.10, 1E+5, 123456789012345678901234567890.5, -0.0, 0e0, 18446744073709551616]"
    plain = snapshot("r-plain", "t1", at(0), extraField={"nested": [1, "two", None]})
    dup = snapshot("r-dup", "t1", at(0))
    dup_nul = snapshot("r-dup-nul", "t1", at(0))
    unknown = cost("r-unknown", "t1", at(0))
    return [
        ("plain", plain.value, True),
        ("numbers", _with_x("r-num", numbers), True),
        ("nul-in-payload", _with_x("r-nul", '"\\u0000"'), True),
        ("huge-exponent", _with_x("r-exp", "1E+999999"), True),
        ("escaped-in-payload", _with_x("r-esc", '"a\\u00e9\\n"'), True),
        ("policy", _policy_request("p-plain", '"r"'), True),
        # outside the payload: the whole record goes, and PostgreSQL judges all of it (a
        # policy's requestId is not a key: only its record's parse sees it)
        ("nul-in-envelope", _policy_request("p-nul", '"r\\u0000"'), False),
        ("escape-in-envelope", _policy_request("p-esc", '"r\\u0065"'), False),
        ("duplicate-payload", _duplicate_payload(dup.value, '"fine"'), False),
        ("duplicate-payload-nul", _duplicate_payload(dup_nul.value, '"\\u0000"'), False),
        ("unknown-envelope-number", unknown.value[:-1] + b',"x":1E+999999}', False),
    ]  # fmt: skip


CASES = _cases()
#: What the service wrote: key and stored JSON text of every row with one.
_STORED = (
    'SELECT "requestId", coalesce("routingSnapshot", "actualCost")::text FROM "ExecutionRecord" '
    'UNION ALL SELECT "id", "routingPolicy"::text FROM "Tenant" WHERE "routingPolicy" IS NOT NULL'
)


def _verdict(result: EventResult) -> tuple[Outcome, ReasonCode | None, str]:
    return (result.outcome, result.reason, result.message)


async def test_payload_texts_store_and_fail_exactly_as_whole_records(
    engine: AsyncEngine, database: Database
) -> None:
    consumer: list[PendingEvent] = []
    whole: list[PendingEvent] = []
    for name, value, alone in CASES:
        reference = decode_event(value)
        assert isinstance(reference, DecodedEvent), (name, reference)
        event = fast_decode_event(value)
        assert isinstance(event, ConsumerEvent), (name, event)
        assert (event.payload_json is not None) is alone, name
        consumer.append(PendingEvent.of(event, value))
        # The reference's envelope without a payload text: the whole record is sent.
        as_whole = ConsumerEvent(
            reference.event_id,
            reference.type,
            reference.occurred_at,
            reference.tenant_id,
            reference.request_id,
            None,
        )
        whole.append(PendingEvent.of(as_whole, value))

    # The old way, rolled back: the verdicts and stored values to match.
    await database.execute(
        "INSERT INTO \"Tenant\" (\"id\") VALUES ('t1'), ('p-plain'), ('p-nul'), ('p-esc')"
    )
    expected = await apply_events(engine, whole, policy=MissingRowPolicy.CREATE)
    expected_stored: dict[str, str] = {row[0]: row[1] for row in await database.fetch(_STORED)}
    await database.execute(
        'DELETE FROM "ExecutionRecord"; UPDATE "Tenant" SET "routingPolicy" = NULL, '
        '"routingPolicyOccurredAt" = NULL, "routingPolicyEventId" = NULL'
    )
    assert len(await database.fetch(_STORED)) == 0

    outcome = await apply_events(engine, consumer, policy=MissingRowPolicy.CREATE)

    verdicts = {name: _verdict(r) for (name, _, _), r in zip(CASES, outcome.results, strict=True)}
    assert verdicts == {
        name: _verdict(r) for (name, _, _), r in zip(CASES, expected.results, strict=True)
    }
    # The cases mean something: refused ones (by PostgreSQL: \u0000, a number numeric cannot
    # hold, inside the payload or anywhere in a whole record) and stored ones.
    rejected = {n for n, v in verdicts.items() if v[0] is Outcome.DEAD_LETTERED}
    assert rejected == {
        "nul-in-payload",
        "huge-exponent",
        "nul-in-envelope",
        "duplicate-payload-nul",
        "unknown-envelope-number",
    }
    assert all(verdicts[n][1] is ReasonCode.DB_REJECTED for n in rejected)
    stored = {row[0]: row[1] for row in await database.fetch(_STORED)}
    assert stored == expected_stored
    assert len(stored) == len(CASES) - len(rejected)
    assert '"tenantId": "p-esc"' in stored["p-esc"]
    assert (
        '"x": [1.10, 100000, 123456789012345678901234567890.5, 0.0, 0, 18446744073709551616]'
        in stored["r-num"]
    )
    assert '"extraField": {"nested": [1, "two", null]}' in stored["r-plain"]
    assert '"x": "fine"' not in stored["r-dup"]  # the last "payload" key's value, as before


async def test_each_row_stores_its_own_text_whatever_texts_surround_it(
    engine: AsyncEngine, database: Database
) -> None:
    """The texts travel as one ``bytea`` per column (``consumer.pipeline.sql``: joined, NULL as
    an empty text): each row gets its own, among payload texts, whole records and fields with
    no candidate, in a batch and alone."""
    events = []
    for n in range(7):
        note = f'é中🙂 "{n}"\n'
        if n % 3 != 1:
            events.append(snapshot(f"r{n}", "t1", at(0), note=note))
        if n % 2 == 0:
            events.append(cost(f"r{n}", "t1", at(0), note=note))
    pending = []
    for i, sent in enumerate(events):
        event = fast_decode_event(sent.value)
        assert isinstance(event, ConsumerEvent)
        assert event.payload_json is not None
        if i % 2:  # every other one as its whole record
            event = msgspec.structs.replace(event, payload_json=None)
        pending.append(PendingEvent.of(event, sent.value))
    for batch in (pending, pending[:1]):
        await database.execute('DELETE FROM "ExecutionRecord"')
        outcome = await apply_events(engine, batch, policy=MissingRowPolicy.CREATE)
        assert [r.outcome for r in outcome.results] == [Outcome.APPLIED] * len(batch)
        rows = await database.fetch(
            'SELECT "requestId", "routingSnapshot"->>\'note\', "actualCost"->>\'note\' '
            'FROM "ExecutionRecord"'
        )
        expected: dict[str, list[str | None]] = {}
        for p in batch:
            key = p.event.request_id or ""
            notes = expected.setdefault(key, [None, None])
            notes[p.event.type is EventType.COST] = f'é中🙂 "{key[1:]}"\n'
        assert {r[0]: [r[1], r[2]] for r in rows} == expected


async def test_a_text_holding_the_separator_never_reaches_postgresql(
    engine: AsyncEngine, database: Database
) -> None:
    """No JSON text holds the separator byte (JSON escapes control characters); one that did (a
    bug upstream) would shift the texts after it into other rows, so the statement stops."""
    event = fast_decode_event(snapshot("r-sep", "t1", at(0)).value)
    assert isinstance(event, ConsumerEvent)
    broken = PendingEvent(event, None, b'{"x": "' + SEPARATOR + b'"}')
    with pytest.raises(AssertionError, match="separator"):
        await apply_events(engine, [broken], policy=MissingRowPolicy.CREATE)
    assert await database.fetch('SELECT 1 FROM "ExecutionRecord"') == []
