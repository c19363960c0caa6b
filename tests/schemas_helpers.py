"""Sample events for the contract tests (schemas, loaders, producer): one valid record per type
and ways to break it, as raw envelopes (dicts with Decimals) and as record bytes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from schemas import EventType, dumps

TENANT = "tenant-a"
REQUEST = "req-1"
EVENT_ID = "0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10"


def snapshot_payload(tenant: str = TENANT) -> dict[str, Any]:
    return {
        "snapshotId": "snap-1",
        "strategy": "cost",
        "resolvedAlias": "fast",
        "candidateCount": 3,
        "timestamp": "2026-01-31T12:00:00.250Z",
        "costEstimate": {"totalCostUsd": Decimal("0.0012"), "currency": "USD"},
        "tenantId": tenant,
        "primary": {"provider": "openai", "model": "gpt-4o"},
        "fallbacks": [
            {"provider": "anthropic", "model": "claude-sonnet", "weight": Decimal("0.5")}
        ],
        "routerBuild": {"sha": "abc123", "flags": [1, Decimal("2.50"), None, True]},
    }


def cost_payload() -> dict[str, Any]:
    return {
        "inputTokens": 1200,
        "outputTokens": 300,
        "inputCostUsd": Decimal("0.1"),
        "outputCostUsd": Decimal("0.2"),
        "totalCostUsd": Decimal("0.3"),
        "provider": "openai",
        "cachedTokens": 17,
    }


def policy_payload(tenant: str = TENANT) -> dict[str, Any]:
    return {
        "tenantId": tenant,
        "allowedProviders": ["openai", "anthropic"],
        "deniedProviders": ["mistral"],
        "preferredProvider": "openai",
        "maxCostPerRequestUsd": Decimal("0.50"),
        "defaultStrategy": "cost",
        "notes": "kept as sent",
    }


PAYLOADS: dict[EventType, Callable[[], dict[str, Any]]] = {
    EventType.SNAPSHOT: snapshot_payload,
    EventType.COST: cost_payload,
    EventType.POLICY: policy_payload,
}


def envelope(event_type: EventType, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """A valid envelope of ``event_type`` (a fixed eventId and time)."""
    doc: dict[str, Any] = {
        "eventId": EVENT_ID,
        "type": event_type.value,
        "schemaVersion": 1,
        "occurredAt": "2026-01-31T12:00:01.000001+01:00",
        "tenantId": TENANT,
    }
    if event_type is not EventType.POLICY:
        doc["requestId"] = REQUEST
    doc["payload"] = PAYLOADS[event_type]() if payload is None else payload
    return doc


def mutated(doc: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``change`` applied to it."""
    out = copy.deepcopy(doc)
    change(out)
    return out


def record(doc: object) -> bytes:
    return dumps(doc)
