"""A bug in the decoder stops the consumer loudly instead of dead-lettering the stream."""

from __future__ import annotations

import pytest

import schemas.decode
from schemas import ReasonCode, Rejection, decode_event


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
