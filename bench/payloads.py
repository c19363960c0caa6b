"""The records of each workload (:mod:`bench.workload`): payloads and, for ``realistic``, the
whole record with its own time format. Seeded by the caller's ``random.Random``: the same calls
give the same bytes."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from schemas import SCHEMA_VERSION, EventType, Rejection, decode_event, dumps

__all__ = ["benchmark_payload", "random_uuid", "realistic_record"]

_PROVIDERS: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-4o", "gpt-4o-mini", "o3-mini", "gpt-4.1"),
    "anthropic": ("claude-sonnet-4", "claude-haiku-3.5", "claude-opus-4"),
    "google": ("gemini-2.5-pro", "gemini-2.5-flash"),
    "mistral": ("mistral-large", "mistral-small", "codestral"),
    "cohere": ("command-r-plus", "command-r"),
    "groq": ("llama-3.3-70b", "mixtral-8x7b"),
    "together": ("llama-3.1-405b", "qwen-2.5-72b"),
    "fireworks": ("deepseek-v3", "llama-3.1-70b"),
    "bedrock": ("claude-sonnet-4", "titan-text", "llama-3.1-70b"),
    "azure": ("gpt-4o", "gpt-4.1-mini"),
}
_PROVIDER_NAMES = tuple(_PROVIDERS)
_STRATEGIES = ("cost", "latency", "quality", "balanced", "fallback-chain")
_ALIASES = ("smart", "fast", "cheap", "code", "long-context", "vision", "default")
_MICRO = Decimal("0.00000001")


def random_uuid(rng: random.Random) -> uuid.UUID:
    """A version-4 UUID drawn from ``rng``."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _usd(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(_MICRO)


def _snapshot_payload(rng: random.Random, tenant: str, at: datetime) -> dict[str, Any]:
    chosen = rng.sample(_PROVIDER_NAMES, rng.randint(3, 5))
    models = [{"provider": p, "model": rng.choice(_PROVIDERS[p])} for p in chosen]
    fallbacks = models[1:]
    return {
        "snapshotId": str(random_uuid(rng)),
        "strategy": rng.choice(_STRATEGIES),
        "resolvedAlias": rng.choice(_ALIASES),
        "candidateCount": 1 + len(fallbacks) + rng.randint(0, 3),
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "costEstimate": {"totalCostUsd": _usd(rng.uniform(0.00005, 0.25))},
        "tenantId": tenant,
        "primary": models[0],
        "fallbacks": fallbacks,
    }


def _cost_payload(rng: random.Random) -> dict[str, Any]:
    input_tokens = rng.randint(20, 12_000)
    output_tokens = rng.randint(1, 4_000)
    input_cost = (Decimal(input_tokens) * Decimal("0.0000025")).quantize(_MICRO)
    output_cost = (Decimal(output_tokens) * Decimal("0.00001")).quantize(_MICRO)
    return {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "inputCostUsd": input_cost,
        "outputCostUsd": output_cost,
        "totalCostUsd": input_cost + output_cost,
        "provider": rng.choice(_PROVIDER_NAMES),
    }


def _policy_payload(rng: random.Random, tenant: str) -> dict[str, Any]:
    allowed = rng.sample(_PROVIDER_NAMES, rng.choice((0, 2, 3, 4, 5)))
    rest = [p for p in _PROVIDER_NAMES if p not in allowed]
    denied = rng.sample(rest, rng.randint(0, 2)) if allowed else rng.sample(rest, rng.randint(0, 3))
    candidates = allowed or [p for p in _PROVIDER_NAMES if p not in denied]
    preferred = rng.choice(candidates) if rng.random() < 0.7 else None
    max_cost = _usd(rng.uniform(0.001, 2.0)) if rng.random() < 0.6 else None
    return {
        "tenantId": tenant,
        "allowedProviders": allowed,
        "deniedProviders": denied,
        "preferredProvider": preferred,
        "maxCostPerRequestUsd": max_cost,
        "defaultStrategy": rng.choice(_STRATEGIES),
    }


def benchmark_payload(
    rng: random.Random, kind: EventType, tenant: str, at: datetime
) -> dict[str, Any]:
    """A compact ASCII payload of ``kind`` (the ``benchmark`` workload)."""
    if kind is EventType.SNAPSHOT:
        return _snapshot_payload(rng, tenant, at)
    if kind is EventType.COST:
        return _cost_payload(rng)
    return _policy_payload(rng, tenant)


# --- realistic -----------------------------------------------------------------------------------

_OFFSETS = (0, 0, 0, 330, -480, 540, 60, -180, 480, -300)  # minutes east of UTC; Z twice as often
_TEXTS = (
    "Résumé de la réunion : le client souhaite une réponse avant vendredi.",
    "請幫我總結這份合約的重點，並列出所有風險條款。",  # noqa: RUF001
    "この文章を丁寧な日本語に書き直してください。",
    "Überprüfe den Code auf Sicherheitslücken 🔒 und erkläre die Änderungen.",
    'Generate a SQL query for "monthly active users"\nGROUP BY region, plan',
    "¿Puedes traducir esto al español? ¡Gracias! 🙏",
    "한국어로 답변해 주세요. 요약은 세 문장 이내로 부탁합니다.",
    "Write a haiku about autumn leaves 🍂🍁",
    "Análise de sentimento: ótimo produto, entrega lenta 😐",
    "Explain quantum entanglement to a ten-year-old 🧒⚛️",
    "用 Python 写一个快速排序，并解释它的时间复杂度。",  # noqa: RUF001
    "Сделай краткое резюме статьи о машинном обучении.",  # noqa: RUF001
    "Summarise the attached incident report in three bullet points.",
    "Draft a polite reply: we can't ship before Q3.\n\nThanks, Zoë",
)
_LANGUAGES = ("en", "fr", "de", "ja", "zh", "ko", "es", "pt", "ru")
_REASONS = ("cheapest within latency budget", "highest quality score", "régional: données en UE")
_FALLBACKS = (0, 1, 1, 2, 2, 2, 3, 3, 4, 4)
_EIGHT = Decimal("0.00000001")


def _stamp(at: datetime, offset_minutes: int) -> str:
    """``at`` to the millisecond at ``offset_minutes`` east of UTC, as RFC 3339 (``Z`` for 0)."""
    local = at.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _js_sum(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` as a JavaScript producer writes it: the float sum's shortest form."""
    return Decimal(repr(float(a) + float(b)))


def _realistic_snapshot(rng: random.Random, tenant: str, stamp: str) -> dict[str, Any]:
    chosen = rng.sample(_PROVIDER_NAMES, 1 + rng.choice(_FALLBACKS))
    models = [
        {
            "provider": p,
            "model": rng.choice(_PROVIDERS[p]),
            "score": Decimal(rng.randint(500, 999)) / 1000,
            "estimatedLatencyMs": rng.randint(120, 4_000),
        }
        for p in chosen
    ]
    models[0]["reason"] = rng.choice(_REASONS)
    tokens_in, tokens_out = rng.randint(20, 12_000), rng.randint(16, 4_000)
    return {
        "snapshotId": str(random_uuid(rng)),
        "strategy": rng.choice(_STRATEGIES),
        "resolvedAlias": rng.choice(_ALIASES),
        "candidateCount": len(models) + rng.randint(0, 2),
        "timestamp": stamp,
        "costEstimate": {
            "totalCostUsd": (Decimal(tokens_in * 25 + tokens_out * 100) * _EIGHT).normalize(),
            "currency": "USD",
            "inputTokens": tokens_in,
            "outputTokens": tokens_out,
        },
        "tenantId": tenant,
        "primary": models[0],
        "fallbacks": models[1:],
        "request": {
            "promptPreview": " ".join(rng.sample(_TEXTS, rng.choice((1, 1, 2, 3)))),
            "language": rng.choice(_LANGUAGES),
            "tags": rng.sample(("chat", "batch", "eval", "prod", "vip", "beta"), rng.randint(0, 3)),
            "attributes": {
                "channel": rng.choice(("web", "api", "slack", "mobile")),
                "priority": rng.randint(0, 3),
                "experiment": {"id": f"exp-{rng.randint(1, 60)}", "arm": rng.choice("AB")},
            },
        },
        "routerVersion": f"2.{rng.randint(10, 19)}.{rng.randint(0, 9)}",
    }


def _realistic_cost(rng: random.Random) -> dict[str, Any]:
    provider = rng.choice(_PROVIDER_NAMES)
    tokens_in, tokens_out = rng.randint(20, 12_000), rng.randint(1, 4_000)
    price_in = Decimal(rng.choice((15, 25, 30, 50, 150, 300))) / 10
    price_out = price_in * rng.choice((2, 4, 5))
    cost_in = (tokens_in * price_in / 1_000_000).quantize(_EIGHT).normalize()
    cost_out = (tokens_out * price_out / 1_000_000).quantize(_EIGHT).normalize()
    payload: dict[str, Any] = {
        "inputTokens": tokens_in,
        "outputTokens": tokens_out,
        "inputCostUsd": cost_in,
        "outputCostUsd": cost_out,
        "totalCostUsd": _js_sum(cost_in, cost_out),
        "provider": provider,
        "model": rng.choice(_PROVIDERS[provider]),
        "currency": "USD",
        "latencyMs": rng.randint(150, 30_000),
        "timeToFirstTokenMs": rng.randint(80, 2_500),
        "finishReason": rng.choice(("stop", "stop", "length", "tool_calls")),
        "usage": {
            "cachedInputTokens": rng.randint(0, tokens_in),
            "reasoningTokens": rng.choice((0, 0, rng.randint(1, tokens_out))),
            "toolCalls": rng.randint(0, 3),
        },
        "pricing": {"inputPerMTokUsd": price_in, "outputPerMTokUsd": price_out, "list": "2026-01"},
    }
    if rng.random() < 0.5:
        payload["trace"] = {"traceId": f"{rng.getrandbits(128):032x}", "sampled": True}
    if rng.random() < 0.4:
        payload["billingNote"] = " ".join(rng.sample(_TEXTS, rng.randint(1, 2)))
    return payload


def _realistic_policy(rng: random.Random, tenant: str, stamp: str) -> dict[str, Any]:
    payload = _policy_payload(rng, tenant)
    overrides = rng.sample(_ALIASES, rng.randint(0, 3))
    payload.update(
        displayName=rng.choice(("Société Générale — Équipe IA", "株式会社サンプル", "Zürich Labs")),
        notes=rng.choice(_TEXTS),
        updatedBy=rng.choice(("ops@example.com", "김민준", "josé.garcía")),
        updatedAt=stamp,
        rateLimits={"requestsPerMinute": rng.randint(60, 6_000), "tokensPerDay": 10**7},
        modelOverrides={
            alias: {"provider": p, "model": rng.choice(_PROVIDERS[p])}
            for alias in overrides
            for p in [rng.choice(_PROVIDER_NAMES)]
        },
        budget={"monthlyUsd": rng.randint(100, 50_000), "alertAt": [0.5, 0.8, 0.95]},
    )
    return payload


def realistic_record(
    rng: random.Random,
    kind: EventType,
    tenant: str,
    request_id: str | None,
    at: datetime,
    *,
    validate: bool = False,
) -> tuple[bytes, uuid.UUID, datetime]:
    """A ``realistic`` record of ``kind``: ``(value, eventId, occurredAt as written)``.

    ``occurredAt`` is ``at`` to the millisecond; with ``validate``, ``ValueError`` if
    :func:`schemas.decode_event` rejects the record.
    """
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # written to the millisecond
    offset = rng.choice(_OFFSETS)
    if kind is EventType.SNAPSHOT:
        stamp = _stamp(at - timedelta(milliseconds=rng.randint(1, 40)), offset)
        payload = _realistic_snapshot(rng, tenant, stamp)
    elif kind is EventType.COST:
        payload = _realistic_cost(rng)
    else:
        payload = _realistic_policy(rng, tenant, _stamp(at, offset))
    event_id = random_uuid(rng)
    envelope: dict[str, Any] = {
        "eventId": str(event_id),
        "type": kind.value,
        "schemaVersion": SCHEMA_VERSION,
        "occurredAt": _stamp(at, offset),
        "tenantId": tenant,
    }
    if request_id is not None:
        envelope["requestId"] = request_id
    envelope["payload"] = payload
    value = dumps(envelope)
    if validate and isinstance(rejected := decode_event(value), Rejection):
        raise ValueError(f"{rejected.reason}: {rejected.message}")
    return value, event_id, at
