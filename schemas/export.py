"""JSON Schema (draft 2020-12) of the envelope and of each payload, for producers in any language.

The files are generated from :mod:`schemas.models`; the committed copy lives in ``schemas/json/``
and a test fails when it is out of date. ``envelope.schema.json`` is self-contained: it embeds the
three payload schemas under ``$defs`` and picks one by ``type``, so validating a whole event needs
that one file. What JSON Schema cannot say, and the consumer still checks: the cross-field rules
(cost total, candidate count, tenant equality, provider lists), and that ``1.0`` is not an
integer (JSON Schema counts it as one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from schemas.codes import EventType
from schemas.models import PAYLOAD_MODELS, Envelope

__all__ = ["DRAFT", "SCHEMA_FILES", "export_json_schemas", "json_schemas"]

DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
_BASE_ID: Final = "https://schemas.routing-persistence.dev/v1/"

#: File name of each exported schema.
SCHEMA_FILES: Final = {
    "Envelope": "envelope.schema.json",
    "RoutingPlanSnapshot": "routing-plan-snapshot.schema.json",
    "ActualCost": "actual-cost.schema.json",
    "TenantRoutingPolicy": "tenant-routing-policy.schema.json",
}

_RULES: Final = {
    "RoutingPlanSnapshot": "Also checked by the consumer (rule_violation): 1 + len(fallbacks) <= "
    "candidateCount; tenantId equals the envelope's tenantId.",
    "ActualCost": "Also checked by the consumer (rule_violation): totalCostUsd equals "
    "inputCostUsd + outputCostUsd within 0.000001.",
    "TenantRoutingPolicy": "Also checked by the consumer (rule_violation): allowedProviders and "
    "deniedProviders are disjoint; preferredProvider is not denied and, when allowedProviders is "
    "not empty, is one of them; tenantId equals the envelope's tenantId.",
}


def _model_schema(model: type[BaseModel], file_name: str) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    return {"$schema": DRAFT, "$id": _BASE_ID + file_name, **schema}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The schema of each file of :data:`SCHEMA_FILES`, keyed by file name."""
    out: dict[str, dict[str, Any]] = {}
    envelope = _model_schema(Envelope, SCHEMA_FILES["Envelope"])
    envelope["description"] = (
        "One Kafka record value (UTF-8 JSON). The record key is requestId for routing.snapshot "
        "and routing.cost, tenantId for tenant.policy."
    )
    defs: dict[str, Any] = envelope.setdefault("$defs", {})
    branches: list[dict[str, Any]] = []
    for event_type, model in PAYLOAD_MODELS.items():
        name = model.__name__
        schema = _model_schema(model, SCHEMA_FILES[name])
        schema["description"] = f"{(model.__doc__ or '').split(chr(10))[0]} {_RULES[name]}"
        out[SCHEMA_FILES[name]] = schema
        # Embedded copy: nested definitions are hoisted into the envelope's own $defs.
        embedded = {k: v for k, v in schema.items() if k not in ("$schema", "$id", "$defs")}
        for def_name, definition in schema.get("$defs", {}).items():
            if defs.setdefault(def_name, definition) != definition:
                raise AssertionError(f"two different definitions named {def_name}")
        defs[name] = embedded
        then: dict[str, Any] = {"properties": {"payload": {"$ref": f"#/$defs/{name}"}}}
        if event_type is not EventType.POLICY:
            then["required"] = ["requestId"]
            then["properties"]["requestId"] = {"type": "string"}
        branches.append(
            {
                "if": {"properties": {"type": {"const": event_type.value}}, "required": ["type"]},
                "then": then,
            }
        )
    envelope["allOf"] = branches
    out[SCHEMA_FILES["Envelope"]] = envelope
    return out


def export_json_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` (created if missing); return the paths written.

    The output is deterministic (sorted keys, two-space indent, final newline), so the committed
    copy can be compared byte for byte.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file_name, schema in sorted(json_schemas().items()):
        path = directory / file_name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
