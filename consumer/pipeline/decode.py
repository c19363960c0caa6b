"""The consumer's record decoder: :func:`schemas.decode_event`'s verdict, without the payload dict.

:func:`decode_event` accepts exactly the records :func:`schemas.decode_event` accepts, and
returns for them a :class:`ConsumerEvent`: the reference's ``eventId``, type, UTC
``occurredAt``, ``tenantId`` and ``requestId`` (same values, same types), and instead of the
payload dict (which the consumer never reads: PostgreSQL stores its own parse of the JSON) the
payload's JSON text exactly as it appears in the record, when PostgreSQL provably stores the
same value from that text as from the whole record (else ``None``: store the record's
``-> 'payload'``, see :class:`ConsumerEvent`). For every other input it returns the reference's
:class:`~schemas.Rejection` itself (same reason code and message). ``schemas`` stays the
contract and the reference; this module only takes a shortcut for records it can prove valid.

How: `msgspec <https://jcristharif.com/msgspec/>`_ reads each record twice, in C: once into a
typed view (envelope and payload as structs: every one-field rule of types, lengths, bounds,
literals, UUID and RFC 3339 syntax; money as the numbers :func:`schemas.jsoncodec.loads` builds,
ints or :class:`~decimal.Decimal` from their literal text) and once for the texts the event needs
(the strings of ``eventId`` and ``occurredAt``, and the payload as :class:`msgspec.Raw`: its
bytes, not parsed into objects). What msgspec cannot express is checked here in Python: money,
the cross-field rules, the envelope's ``tenantId`` against the payload's, and where msgspec's
grammar is wider than the reference's (the 32-digit UUID form, RFC 3339 forms msgspec also
reads). The fast path accepts a record only when all of it holds. Anything else, every invalid
record included, any msgspec error, and the inputs where msgspec's JSON and the stdlib's could
disagree, goes to :func:`schemas.decode_event` unchanged, which gives the verdict and its
message. So the claims to prove are "the fast path accepts => the reference accepts with the
same envelope, and the payload text loads to the reference's payload": tests/test_fastdecode.py
checks them (generated valid events and single-rule mutations, the schema tests' samples,
hand-written grammar edges, fuzz inputs), and so does every input of ``python -m bench.fuzz``.

The payload text stands for the record only when the bytes outside it hold no backslash and one
``"payload"`` (one top-level payload key) and no envelope field but the six known ones (the typed
view forbids others, each occurrence type-checked): then PostgreSQL's ``(record::jsonb) ->
'payload'`` is the jsonb of that text, and PostgreSQL refuses the record exactly when it refuses
the text (what it refuses in JSON the reference accepts: the escape ``\\u0000`` and numbers
out of ``numeric``'s range; outside the payload there are then no escapes and no number but
``schemaVersion``'s ``1``.) Records decided by the reference keep the whole record.

Inputs sent straight to the reference (besides every failed check):

* not ``bytes``, over ``max_bytes``, or over :data:`FAST_MAX_BYTES` (the contract's
  ``MAX_INT_DIGITS``): no integer literal in a shorter record can exceed the limit, which msgspec
  does not check in the fields it skips;
* not ASCII and not valid UTF-8 (msgspec does not check UTF-8 inside the fields it skips);
* with more than ``MAX_DEPTH`` (64) ``[`` and ``{`` bytes in all: at most that many, and the
  record nests at most that deep, the contract's limit.

Lone UTF-16 surrogates (escaped), NaN/Infinity, duplicate keys (msgspec, like a dict, keeps the
last; a second ``type`` key with another value it refuses) need no guard: see the tests' edges.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import msgspec

from schemas import DEFAULT_MAX_BYTES, EventType, Rejection
from schemas import decode_event as reference_decode_event
from schemas.fields import ID_MAX_LENGTH, ID_MIN_LENGTH
from schemas.jsoncodec import MAX_DEPTH, MAX_INT_DIGITS
from schemas.rules import check_cost

__all__ = [
    "FAST_MAX_BYTES",
    "ConsumerEvent",
    "decode_event",
    "fast_path",
]

#: Longest record the fast path takes (longer ones go to the reference): no integer literal in
#: a record this short can have more digits than the contract allows.
FAST_MAX_BYTES: Final = MAX_INT_DIGITS

_Identifier = Annotated[str, msgspec.Meta(min_length=ID_MIN_LENGTH, max_length=ID_MAX_LENGTH)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class ConsumerEvent(msgspec.Struct, frozen=True, gc=False):
    """A valid record, as the consumer needs it: the fields of :class:`schemas.DecodedEvent`
    but the payload dict, equal to the reference's, and the payload's JSON text.

    ``payload_json`` is the record's ``payload`` value, character for character (unknown fields,
    number literals, escapes, key order, duplicate keys all as written): PostgreSQL stores
    ``payload_json::jsonb``. ``None`` when that text alone might not give what the whole record
    gives (see the module docstring): then the record's text must be sent with the event and
    PostgreSQL stores ``(record::jsonb) -> 'payload'``, as it always did.
    """

    event_id: uuid.UUID
    type: EventType
    occurred_at: datetime
    tenant_id: str
    request_id: str | None
    payload_json: str | None


# Two decoders read each record, both in C, both keeping the last of duplicate keys as the
# reference (a dict) does: _CHECKED the typed view that proves the one-field rules (types,
# lengths, bounds, UUID and RFC 3339 syntax) and reads the money, _DATA the texts the event needs
# (the strings of eventId and occurredAt, whose forms fast_path narrows to the reference's, and
# the payload's bytes). Unknown payload fields are skipped by both, as the reference ignores them
# (they stay in the payload's text). Unknown envelope fields the typed view refuses (so the
# reference decides, and the whole record is kept): see the module docstring.


class _Data(msgspec.Struct, gc=False):
    eventId: str
    occurredAt: str
    payload: msgspec.Raw


class _ProviderModel(msgspec.Struct, gc=False):
    provider: _NonEmpty
    model: _NonEmpty


class _CostEstimate(msgspec.Struct, gc=False):
    # Money: any JSON value, as loads() builds it (float_hook=Decimal), checked in fast_path.
    # (msgspec's Decimal type would take strings.)
    totalCostUsd: Any


class _Snapshot(msgspec.Struct, gc=False):
    snapshotId: str
    strategy: str
    resolvedAlias: str
    candidateCount: Annotated[int, msgspec.Meta(ge=1)]
    timestamp: msgspec.Raw  # the JSON string: read as a datetime by _TIMESTAMP, its form checked
    costEstimate: _CostEstimate
    tenantId: _Identifier
    primary: _ProviderModel
    fallbacks: list[_ProviderModel]


class _Cost(msgspec.Struct, gc=False):
    inputTokens: Annotated[int, msgspec.Meta(ge=0)]
    outputTokens: Annotated[int, msgspec.Meta(ge=0)]
    provider: _NonEmpty
    # The amounts, as loads() builds them; missing ones read None, as dict.get (checked in Python).
    inputCostUsd: Any = None
    outputCostUsd: Any = None
    totalCostUsd: Any = None


class _Policy(msgspec.Struct, gc=False):
    tenantId: _Identifier
    allowedProviders: list[str]
    deniedProviders: list[str]
    preferredProvider: str | None  # required (no default), as in the reference
    defaultStrategy: str
    maxCostPerRequestUsd: Any  # required, may be null; the value is checked in _policy_ok


class _SnapshotEvent(
    msgspec.Struct, gc=False, tag_field="type", tag="routing.snapshot", forbid_unknown_fields=True
):
    schemaVersion: Literal[1]  # an int literal only: 1.0 and true are refused
    eventId: uuid.UUID  # also takes 32 digits without hyphens: fast_path checks the length
    occurredAt: _AwareDatetime  # a superset of the reference's syntax: fast_path narrows it
    tenantId: _Identifier
    requestId: _Identifier  # required for snapshots and costs (null refused)
    payload: _Snapshot


class _CostEvent(
    msgspec.Struct, gc=False, tag_field="type", tag="routing.cost", forbid_unknown_fields=True
):
    schemaVersion: Literal[1]
    eventId: uuid.UUID
    occurredAt: _AwareDatetime
    tenantId: _Identifier
    requestId: _Identifier
    payload: _Cost


class _PolicyEvent(
    msgspec.Struct, gc=False, tag_field="type", tag="tenant.policy", forbid_unknown_fields=True
):
    schemaVersion: Literal[1]
    eventId: uuid.UUID
    occurredAt: _AwareDatetime
    tenantId: _Identifier
    payload: _Policy
    requestId: _Identifier | None = None  # optional for a policy; kept when given


_DATA: Final = msgspec.json.Decoder(_Data)
_CHECKED: Final = msgspec.json.Decoder(
    _SnapshotEvent | _CostEvent | _PolicyEvent, float_hook=Decimal
)
#: A snapshot's timestamp from its JSON string: the same reading as an _AwareDatetime field's.
_TIMESTAMP: Final = msgspec.json.Decoder(_AwareDatetime)
#: The event type of each typed view. msgspec takes the class from the first "type" key and
#: refuses the record if another "type" key holds another value, so this is the type the
#: reference reads (the last "type"), as the "dup-type-*" cases of the tests check.
_TYPE_OF: Final[dict[type, EventType]] = {
    _SnapshotEvent: EventType.SNAPSHOT,
    _CostEvent: EventType.COST,
    _PolicyEvent: EventType.POLICY,
}
_SNAPSHOT: Final = EventType.SNAPSHOT
#: The types of a JSON number as loads() and the typed view read it (never bool).
#: (``type(True) is bool``, not int.)
_NUMBER: Final = frozenset({int, Decimal})
_COST: Final = EventType.COST


def decode_event(value: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ConsumerEvent | Rejection:
    """Decode one record value: valid per :func:`schemas.decode_event` exactly, for any input.

    A :class:`ConsumerEvent` when the reference accepts ``value`` (its envelope fields equal to
    the reference's, its payload text, when set, loading to the reference's payload), else the
    reference's own :class:`~schemas.Rejection`. Never raises for any input bytes (the
    reference's contract). Valid records of the usual size are decoded without the reference;
    everything else (invalid records included) goes to :func:`schemas.decode_event`, and a
    record valid there is returned with ``payload_json=None`` (the whole record is kept).
    """
    event = fast_path(value, max_bytes)
    if event is not None:
        return event
    reference = reference_decode_event(value, max_bytes=max_bytes)
    if isinstance(reference, Rejection):
        return reference
    return ConsumerEvent(
        reference.event_id,
        reference.type,
        reference.occurred_at,
        reference.tenant_id,
        reference.request_id,
        None,
    )


def fast_path(value: bytes, max_bytes: int) -> ConsumerEvent | None:
    """The fast path alone: the event, or ``None`` when the record is not provably valid here.

    ``None`` means "ask the reference", not "invalid": :func:`decode_event` then returns
    :func:`schemas.decode_event`'s verdict. Never raises. (Public for the tests and the fuzz
    run, which check that valid records take this path and that what it returns is the
    reference's.)
    """
    if type(value) is not bytes:
        return None
    size = len(value)
    if size > max_bytes or size > FAST_MAX_BYTES:
        return None
    if not value.isascii():
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if value.count(b"[") + value.count(b"{") > MAX_DEPTH:
        return None
    try:
        checked = _CHECKED.decode(value)  # first: most invalid records fail here, cheaply
        data = _DATA.decode(value)
        event_type = _TYPE_OF[type(checked)]
        if event_type is _SNAPSHOT:
            snapshot = checked.payload
            money = snapshot.costEstimate.totalCostUsd
            # Read as an _AwareDatetime field reads it (a ValidationError where that refuses);
            # OverflowError where the reference refuses the instant in UTC.
            _TIMESTAMP.decode(snapshot.timestamp).astimezone(UTC)
            stamp = str(snapshot.timestamp, "ascii")  # a datetime's JSON string: ASCII
            if not (
                snapshot.tenantId == checked.tenantId
                and 1 + len(snapshot.fallbacks) <= snapshot.candidateCount
                and type(money) in _NUMBER
                and money >= 0
                and "\\" not in stamp  # no escapes: the JSON text less its quotes is the string
                and _same_time(stamp[1:-1])
            ):
                return None
        elif event_type is _COST:
            if not _cost_ok(checked.payload):
                return None
        elif not _policy_ok(checked.payload, checked.tenantId):
            return None
        occurred = data.occurredAt
        if len(data.eventId) != 36 or not _same_time(occurred):  # see _CHECKED's comments
            return None
        occurred_at = checked.occurredAt.astimezone(UTC)  # may raise, as the reference refuses
        raw_payload = data.payload
        text = str(raw_payload, "utf-8")  # value is UTF-8: checked above
    except Exception:
        return None  # any doubt at all (msgspec's errors included): the reference decides
    # The text stands alone when nothing outside it could change what PostgreSQL stores or
    # whether it refuses the record (module docstring): no backslash outside it, one top-level
    # "payload" key. The usual layout first, in two searches: no backslash at all, and the first
    # '"payload"' (with no escapes, a whole string token; no unknown envelope keys, so the first
    # top-level payload key) is the key of a value that can only be the last one, the text's
    # bytes, then "}": after it there are len(text's bytes) + 2 bytes, room for ':' + text + '}'
    # and no second payload member. Otherwise counts: the payload's span and the rest partition
    # the record, and neither pattern can straddle the span's braces, so counts subtract.
    alone = (
        b"\\" not in value and value.find(b'"payload"') == len(value) - len(raw_payload) - 11
    ) or (
        value.count(b"\\") == text.count("\\")
        and value.count(b'"payload"') == 1 + text.count('"payload"')
    )
    return ConsumerEvent(
        checked.eventId,
        event_type,
        occurred_at,
        checked.tenantId,
        checked.requestId,
        text if alone else None,
    )


def _same_time(text: str) -> bool:
    """Whether the reference reads ``text`` as the instant msgspec read (msgspec accepted it).

    msgspec reads an aware datetime from ``YYYY-MM-DD``, ``T``, ``t`` or a space,
    ``HH:MM:SS``, an optional fraction of any length (rounded to the microsecond), then ``Z``,
    ``z`` or an offset ``+HH:MM`` or ``+HHMM`` (hours <= 23, minutes <= 59), every field
    range-checked. The reference's ``parse_rfc3339`` takes the same but the space and the
    offset without a colon, and truncates the fraction: so a text with neither and at most six
    fraction digits has the same value in both. (An instant out of range once in UTC is left to
    the ``astimezone`` calls of the caller, which raise as the reference refuses.)
    """
    last = text[-1]
    if last == "Z" or last == "z":  # noqa: PLR1714 - two compares beat building a set here
        fraction = len(text) - 20  # "YYYY-MM-DDTHH:MM:SS" is 19 characters
    elif text[-3] == ":":
        fraction = len(text) - 25  # "+HH:MM" is 6
    else:
        return False
    return text[10] != " " and (fraction == 0 or 2 <= fraction <= 7)  # "." and 1 to 6 digits


def _cost_ok(payload: _Cost) -> bool:
    """The amounts of a cost (the rest is in _Cost): money, and the total their sum.

    As the reference's model: each an int or a Decimal (never a bool), >= 0, and
    ``_cost_total_matches`` (whose exact first step is inlined here; every Decimal in a payload
    this module decodes comes from a JSON number, so it is finite).
    """
    cost_in: Any = payload.inputCostUsd
    cost_out: Any = payload.outputCostUsd
    total: Any = payload.totalCostUsd
    if not (
        type(cost_in) in _NUMBER
        and type(cost_out) in _NUMBER
        and type(total) in _NUMBER
        and cost_in >= 0
        and cost_out >= 0
        and total >= 0
    ):
        return False
    return check_cost(payload) is None


def _policy_ok(policy: _Policy, tenant_id: str) -> bool:
    """The rules of a policy beyond the one-field types of _Policy (as the reference's model)."""
    allowed, denied = policy.allowedProviders, policy.deniedProviders
    allowed_set, denied_set = set(allowed), set(denied)
    if (
        policy.tenantId != tenant_id
        or len(allowed_set) != len(allowed)
        or len(denied_set) != len(denied)
        or not allowed_set.isdisjoint(denied_set)
    ):
        return False
    max_cost = policy.maxCostPerRequestUsd  # required in _Policy: a missing one never gets here
    if max_cost is not None and not (type(max_cost) in _NUMBER and max_cost > 0):
        return False
    preferred = policy.preferredProvider
    return preferred is None or (
        preferred not in denied_set and (not allowed or preferred in allowed_set)
    )
