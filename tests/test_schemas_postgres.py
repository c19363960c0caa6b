"""What the decoder accepts, PostgreSQL's jsonb accepts too, with the same values.

The consumer stores a payload by letting PostgreSQL parse the original record bytes
(``($1::jsonb)->'payload'``), so every record ``decode_event`` accepts must parse there, and every
number must come back with the value the decoder read (jsonb may re-write ``1E+5`` as ``100000``,
never change its value). The two documented exceptions are PostgreSQL refusing a record itself
(``\\u0000`` in a string, a number beyond numeric's range): class 22 errors, which the consumer
dead-letters as ``db_rejected``.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import DecodedEvent, decode_event, dumps, loads
from tests.conftest import Services
from tests.strategies import events

pytestmark = pytest.mark.integration

_PAYLOAD_SQL = "SELECT (($1::text)::jsonb -> 'payload')::text"


def _same_value(stored: Any, decoded: Any, path: str = "payload") -> None:
    if isinstance(decoded, dict):
        assert isinstance(stored, dict), path
        assert stored.keys() == decoded.keys(), path
        for key, value in decoded.items():
            _same_value(stored[key], value, f"{path}.{key}")
    elif isinstance(decoded, list):
        assert isinstance(stored, list), path
        assert len(stored) == len(decoded), path
        for index, (s, d) in enumerate(zip(stored, decoded, strict=True)):
            _same_value(s, d, f"{path}[{index}]")
    elif isinstance(decoded, Decimal | int) and not isinstance(decoded, bool):
        assert isinstance(stored, Decimal | int), path
        assert not isinstance(stored, bool), path
        assert Decimal(stored) == Decimal(decoded), path
    else:
        assert stored == decoded, path
        assert type(stored) is type(decoded), path


async def _stored_payloads(url: str, values: list[bytes]) -> list[str | asyncpg.PostgresError]:
    conn = await asyncpg.connect(url)
    out: list[str | asyncpg.PostgresError] = []
    try:
        for value in values:
            try:
                out.append(await conn.fetchval(_PAYLOAD_SQL, value.decode("utf-8")))
            except asyncpg.PostgresError as exc:
                out.append(exc)
    finally:
        await conn.close()
    return out


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_has_nul, value))
    return False


@settings(max_examples=8, deadline=None, database=None)
@given(docs=st.lists(events(), min_size=1, max_size=25))
def test_postgres_reads_every_accepted_event_with_the_same_values(
    services: Services, docs: list[dict[str, Any]]
) -> None:
    values = [dumps(doc) for doc in docs]
    decoded = [decode_event(value) for value in values]
    assert all(isinstance(d, DecodedEvent) for d in decoded)
    stored = asyncio.run(_stored_payloads(services.database_url, values))
    for doc, text, event in zip(docs, stored, decoded, strict=True):
        assert isinstance(event, DecodedEvent)
        if _has_nul(doc):  # PostgreSQL's own refusal: db_rejected in the consumer
            assert isinstance(text, asyncpg.PostgresError)
            assert text.sqlstate == "22P05"
            continue
        assert isinstance(text, str), text
        _same_value(loads(text), event.payload)


EDGE_PAYLOAD_FIELDS = [
    '"a": 1E+5',
    '"a": -0.0',
    '"a": 0.10',
    '"a": "\\/\\ud83d\\ude00 \\u00e9 \\t"',
    '"a": 1, "a": 2',  # duplicate keys: both keep the last
    '"a": ' + "9" * 4300,  # the longest integer Python reads
    '"a": 1e-16383',
    '"a": 1e4000',  # jsonb writes it back as a 4001-digit integer
    '"a": ' + "[" * 62 + "]" * 62,  # 64 levels with the envelope and payload: the limit
    '"a": "\x7f"',
]


@pytest.mark.parametrize("field", EDGE_PAYLOAD_FIELDS)
def test_postgres_reads_edge_cases_the_decoder_accepts(services: Services, field: str) -> None:
    value = (
        '{"eventId": "0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10", "type": "routing.cost", '
        '"schemaVersion": 1, "occurredAt": "2026-01-01T00:00:00Z", "tenantId": "t", '
        '"requestId": "r", "payload": {"inputTokens": 1, "outputTokens": 2, '
        '"inputCostUsd": 0.1, "outputCostUsd": 0.2, "totalCostUsd": 0.3, "provider": "p", '
        + field
        + "}}"
    ).encode()
    event = decode_event(value)
    assert isinstance(event, DecodedEvent), event
    (stored,) = asyncio.run(_stored_payloads(services.database_url, [value]))
    assert isinstance(stored, str), stored
    _same_value(loads(stored), event.payload)


@pytest.mark.parametrize(
    ("field", "sqlstate"),
    [('"a": "\\u0000"', "22P05"), ('"a": 1e200000', "22003")],
)
def test_what_postgres_refuses_itself_is_a_class_22_error(
    services: Services, field: str, sqlstate: str
) -> None:
    # Accepted by the decoder on purpose: the consumer dead-letters these as db_rejected.
    value = (
        '{"eventId": "0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10", "type": "tenant.policy", '
        '"schemaVersion": 1, "occurredAt": "2026-01-01T00:00:00Z", "tenantId": "t", '
        '"payload": {"tenantId": "t", "allowedProviders": [], "deniedProviders": [], '
        '"preferredProvider": null, "maxCostPerRequestUsd": null, "defaultStrategy": "s", '
        + field
        + "}}"
    ).encode()
    assert isinstance(decode_event(value), DecodedEvent)
    (refused,) = asyncio.run(_stored_payloads(services.database_url, [value]))
    assert isinstance(refused, asyncpg.PostgresError)
    assert refused.sqlstate == sqlstate
