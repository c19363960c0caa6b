"""A bug in the decoder stops the consumer loudly instead of dead-lettering the stream."""

from __future__ import annotations

import pytest

import consumer.pipeline.decode
import schemas.decode
from schemas import EventType, ReasonCode, Rejection, decode_event
from tests.schemas_helpers import envelope, record


def test_bad_input_is_a_rejection_not_an_exception() -> None:
    result = decode_event(b"\xff not json")
    assert isinstance(result, Rejection)
    assert result.reason is ReasonCode.INVALID_JSON


def test_a_bug_in_the_decoder_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes) -> object:
        raise NameError("_DECODER")  # what a half-edited module looks like

    monkeypatch.setattr(schemas.decode, "loads", broken)
    with pytest.raises(NameError):
        decode_event(b'{"type": "routing.cost"}')


def test_a_bug_in_the_consumers_fast_path_propagates_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path defers to the reference only for what it cannot prove, not for its bugs."""
    value = record(envelope(EventType.SNAPSHOT))
    assert consumer.pipeline.decode.fast_path(value, 1_048_576) is not None

    def broken(payload_tenant: str, tenant_id: str) -> object:
        raise NameError("check_tenant")

    monkeypatch.setattr(consumer.pipeline.decode, "check_tenant", broken)
    with pytest.raises(NameError):
        consumer.pipeline.decode.decode_event(value)
