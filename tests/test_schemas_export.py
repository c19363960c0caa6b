"""The committed JSON Schema files: up to date with the models, and usable by an independent
validator (``jsonschema``, draft 2020-12) the way a producer in another language would use them."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas import EventType, ReasonCode, export_json_schemas
from schemas.export import SCHEMA_FILES
from tests.samples import REJECTIONS
from tests.schemas_helpers import PAYLOADS, envelope, mutated, record

COMMITTED = Path(__file__).resolve().parent.parent / "schemas" / "json"

# What JSON Schema cannot say about one field, though the consumer refuses it (schema_violation):
# JSON Schema counts 3.0 as an integer and 1.0 as equal to 1, and only asserts "date-time" (beyond
# its pattern) when the validator enables format assertions.
KNOWN_GAPS = {
    "count-float",
    "version-float",
    "occurred-feb-30",
    "occurred-overflow",
}


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((COMMITTED / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _as_foreign_producer_sees_it(doc: dict[str, Any]) -> Any:
    # A producer in another language parses numbers its own way: plain json (floats) here.
    return json.loads(record(doc))


def test_committed_schemas_are_up_to_date(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(SCHEMA_FILES.values())
    stale = [
        p.name
        for p in written
        if not (COMMITTED / p.name).is_file() or (COMMITTED / p.name).read_bytes() != p.read_bytes()
    ]
    assert not stale, (
        f"schemas/json is out of date for {stale}: run "
        "`routing-persistence schemas export schemas/json` and commit the result"
    )
    extra = {p.name for p in COMMITTED.glob("*.json")} - set(SCHEMA_FILES.values())
    assert not extra, f"schemas/json holds files the models no longer produce: {extra}"


def test_the_cli_writes_the_same_files(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "routing-persistence"
    done = subprocess.run(
        [str(script), "schemas", "export", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(Path(line).name for line in done.stdout.split()) == sorted(SCHEMA_FILES.values())
    for name in SCHEMA_FILES.values():
        assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes()


def test_the_cli_exits_1_when_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    script = Path(sys.executable).parent / "routing-persistence"
    done = subprocess.run(
        [str(script), "schemas", "export", str(blocker / "sub")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "cannot write" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("event_type", list(EventType))
def test_valid_sample_events_validate(event_type: EventType) -> None:
    doc = _as_foreign_producer_sees_it(envelope(event_type))
    errors = list(_validator(SCHEMA_FILES["Envelope"]).iter_errors(doc))
    assert not errors, [e.message for e in errors]
    payload_schema = _validator(SCHEMA_FILES[_model_name(event_type)])
    assert not list(payload_schema.iter_errors(doc["payload"]))


def _model_name(event_type: EventType) -> str:
    return {
        EventType.SNAPSHOT: "RoutingPlanSnapshot",
        EventType.COST: "ActualCost",
        EventType.POLICY: "TenantRoutingPolicy",
    }[event_type]


@pytest.mark.parametrize(
    ("case", "event_type", "change"),
    [
        pytest.param(i, t, c, id=i)
        for i, t, c, r, _ in REJECTIONS
        if r is ReasonCode.SCHEMA_VIOLATION and i not in KNOWN_GAPS
    ],
)
def test_events_with_a_broken_field_do_not_validate(
    case: str, event_type: EventType, change: Any
) -> None:
    doc = _as_foreign_producer_sees_it(mutated(envelope(event_type), change))
    assert list(_validator(SCHEMA_FILES["Envelope"]).iter_errors(doc)), case


@pytest.mark.parametrize(
    ("case", "event_type", "change"),
    [pytest.param(i, t, c, id=i) for i, t, c, r, _ in REJECTIONS if i in KNOWN_GAPS],
)
def test_known_gaps_are_only_caught_by_the_consumer(
    case: str, event_type: EventType, change: Any
) -> None:
    doc = _as_foreign_producer_sees_it(mutated(envelope(event_type), change))
    assert not list(_validator(SCHEMA_FILES["Envelope"]).iter_errors(doc)), case


def test_unknown_fields_are_allowed_everywhere() -> None:
    doc = envelope(EventType.SNAPSHOT)
    doc["newEnvelopeField"] = 1
    doc["payload"]["primary"]["newNestedField"] = {"a": [1, 2]}
    assert not list(
        _validator(SCHEMA_FILES["Envelope"]).iter_errors(_as_foreign_producer_sees_it(doc))
    )
    assert set(PAYLOADS) == set(EventType)
