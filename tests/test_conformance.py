"""The conformance corpus (``schemas/conformance/``) judged by the Python decoders.

Every case of ``verdicts.json`` is decoded by the reference (``schemas.decode_event``) and by
the consumer's decoder, which must both give exactly the manifest's verdict, reason code and (for
a valid event) type. The TypeScript validators run the same corpus (``typescript/test/``). A case
the manifest lists under ``disagreements`` for a decoder is a known gap between that decoder and
the contract: it is expected to fail, strictly, so the entry must be removed (rerun
``python -m tests.conformance_build``) as soon as the decoder is fixed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

# The consumer's decoder: the one import to change if it moves.
from consumer.pipeline.decode import decode_event as consumer_decode_event
from schemas import DEFAULT_MAX_BYTES, Rejection, decode_event

CORPUS: Final = Path(__file__).resolve().parent.parent / "schemas" / "conformance"
CASES: Final[dict[str, dict[str, Any]]] = json.loads(
    (CORPUS / "verdicts.json").read_text(encoding="utf-8")
)["cases"]
DECODERS: Final[dict[str, Callable[..., object]]] = {
    "reference": decode_event,
    "fastdecode": consumer_decode_event,
}


def _params() -> list[Any]:
    params = []
    for decoder in DECODERS:
        for name, case in sorted(CASES.items()):
            known = case.get("disagreements", {}).get(decoder)
            marks = (
                [pytest.mark.xfail(strict=True, reason=f"known: {decoder} gives {known}")]
                if known
                else []
            )
            params.append(pytest.param(decoder, name, marks=marks, id=f"{decoder}-{name}"))
    return params


@pytest.mark.parametrize(("decoder", "name"), _params())
def test_decoder_gives_the_manifest_verdict(decoder: str, name: str) -> None:
    case = CASES[name]
    value = (CORPUS / "records" / f"{name}.bin").read_bytes()
    result = DECODERS[decoder](value, max_bytes=case.get("max_bytes", DEFAULT_MAX_BYTES))
    if isinstance(result, Rejection):
        assert (case["verdict"], case["reason"]) == ("rejected", str(result.reason)), result.message
        # The type the decoder had read when it refused the record (metrics label it so).
        kind = None if result.event_type is None else result.event_type.value
        assert kind == case["type"]
    else:
        assert (case["verdict"], case["reason"]) == ("valid", None)
        assert str(getattr(result, "type")) == case["type"]  # noqa: B009 - both result kinds


def test_every_record_has_a_verdict_and_every_verdict_a_record() -> None:
    records = {path.stem for path in (CORPUS / "records").glob("*.bin")}
    assert records == set(CASES)


def test_manifest_entries_are_well_formed() -> None:
    reasons = {
        "invalid_json",
        "not_an_object",
        "schema_violation",
        "rule_violation",
        "unsupported_event_type",
        "unsupported_schema_version",
        "payload_too_large",
    }
    for name, case in CASES.items():
        assert case["verdict"] in {"valid", "rejected"}, name
        assert (case["reason"] is None) == (case["verdict"] == "valid"), name
        assert case["reason"] is None or case["reason"] in reasons, name
        assert case["type"] in {None, "routing.snapshot", "routing.cost", "tenant.policy"}, name
        assert case["note"], name
    # Every decode reason code and every event type has at least one case.
    assert {c["reason"] for c in CASES.values()} - {None} == reasons
    assert {c["type"] for c in CASES.values() if c["verdict"] == "valid"} == {
        "routing.snapshot",
        "routing.cost",
        "tenant.policy",
    }
