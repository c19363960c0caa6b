"""Read and write the stored contract values, validating them ("always validate JSON on load").

The routing engine's side of the B6 design in Python: :func:`load_routing_snapshot`,
:func:`load_actual_cost` and :func:`load_tenant_policy` return the validated model or ``None``,
and raise :class:`~consumer.errors.SchemaDriftError` (naming table, row key and field) when a
stored value no longer matches its model, instead of handing out a half-valid object.
:func:`save_tenant_policy` validates first and writes under the consumer's newer-wins guard.

JSON is read as text and parsed with :func:`schemas.jsoncodec.loads`, so stored numbers come back
as exact Decimals (the driver's own JSON decoding would turn them into floats).
"""

from __future__ import annotations

import uuid
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.errors import RejectedRecord, SchemaDriftError
from schemas.build import to_json_value
from schemas.codes import ReasonCode
from schemas.jsoncodec import dumps, loads
from schemas.models import ActualCost, RoutingPlanSnapshot, TenantRoutingPolicy, format_error

__all__ = [
    "load_actual_cost",
    "load_routing_snapshot",
    "load_tenant_policy",
    "save_tenant_policy",
]

_ModelT = TypeVar("_ModelT", bound=BaseModel)

# Table and column names are fixed identifiers (never input); values are bound parameters.
_SELECT_EXECUTION: Final = 'SELECT "{column}"::text FROM "ExecutionRecord" WHERE "requestId" = :key'
_SELECT_POLICY: Final = 'SELECT "routingPolicy"::text FROM "Tenant" WHERE "id" = :key'
_SAVE_POLICY: Final = text(
    """
    WITH target AS (SELECT "id" FROM "Tenant" WHERE "id" = :tenant_id),
    written AS (
        UPDATE "Tenant" AS t
        SET "routingPolicy" = CAST(CAST(:policy AS text) AS jsonb),
            "routingPolicyOccurredAt" = now(),
            "routingPolicyEventId" = CAST(:event_id AS uuid)
        WHERE t."id" = :tenant_id
          AND (t."routingPolicyOccurredAt" IS NULL
               OR (t."routingPolicyOccurredAt", t."routingPolicyEventId")
                  < (now(), CAST(:event_id AS uuid)))
        RETURNING t."id"
    )
    SELECT (SELECT count(*) FROM target) AS found, (SELECT count(*) FROM written) AS written
    """
)


async def load_routing_snapshot(engine: AsyncEngine, request_id: str) -> RoutingPlanSnapshot | None:
    """The stored ``"routingSnapshot"`` of ``request_id``, validated; ``None`` if row or value is
    missing. Raises :class:`SchemaDriftError` when the stored JSON no longer matches the model."""
    return await _load(
        engine,
        _SELECT_EXECUTION.format(column="routingSnapshot"),
        request_id,
        RoutingPlanSnapshot,
        where=f'"ExecutionRecord" row with "requestId" = {request_id!r}',
        column="routingSnapshot",
    )


async def load_actual_cost(engine: AsyncEngine, request_id: str) -> ActualCost | None:
    """The stored ``"actualCost"`` of ``request_id``, validated; ``None`` if row or value is
    missing. Raises :class:`SchemaDriftError` when the stored JSON no longer matches the model."""
    return await _load(
        engine,
        _SELECT_EXECUTION.format(column="actualCost"),
        request_id,
        ActualCost,
        where=f'"ExecutionRecord" row with "requestId" = {request_id!r}',
        column="actualCost",
    )


async def load_tenant_policy(engine: AsyncEngine, tenant_id: str) -> TenantRoutingPolicy | None:
    """The stored ``"routingPolicy"`` of ``tenant_id``, validated; ``None`` if row or value is
    missing. Raises :class:`SchemaDriftError` when the stored JSON no longer matches the model,
    including a policy whose ``tenantId`` is not its row's ``"id"``."""
    policy = await _load(
        engine,
        _SELECT_POLICY,
        tenant_id,
        TenantRoutingPolicy,
        where=f'"Tenant" row with "id" = {tenant_id!r}',
        column="routingPolicy",
    )
    if policy is not None and policy.tenantId != tenant_id:
        raise SchemaDriftError(
            f'"Tenant" row with "id" = {tenant_id!r}: routingPolicy.tenantId is '
            f"{policy.tenantId!r}, not the row's id"
        )
    return policy


async def save_tenant_policy(engine: AsyncEngine, policy: TenantRoutingPolicy) -> bool:
    """Validate ``policy``, then store it as ``"routingPolicy"`` of its tenant's ``"Tenant"`` row.

    The write carries a version like a ``tenant.policy`` event: ``"routingPolicyOccurredAt"`` =
    ``now()`` and a fresh ``"routingPolicyEventId"``, under the consumer's guard (only over an
    older version). Returns ``True`` when written, ``False`` when a newer policy is stored (an
    event stamped later than this transaction's start). Raises ``pydantic.ValidationError`` if the
    policy breaks a rule (it is re-validated: a model may have been built with
    ``model_construct`` or changed after validation) and
    :class:`~consumer.errors.RejectedRecord` (``unknown_tenant``) when no such tenant exists:
    tenants are never created here.
    """
    validated = TenantRoutingPolicy.model_validate(_as_json_dict(policy))
    body = dumps(to_json_value(validated.model_dump(mode="python")))
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                _SAVE_POLICY,
                {
                    "tenant_id": validated.tenantId,
                    "policy": body.decode("utf-8"),
                    "event_id": str(uuid.uuid4()),
                },
            )
        ).one()
    if row.found == 0:
        raise RejectedRecord(
            ReasonCode.UNKNOWN_TENANT, f'no "Tenant" row with "id" = {validated.tenantId!r}'
        )
    return bool(row.written)


def _as_json_dict(model: BaseModel) -> dict[str, Any]:
    """The model as the dict its JSON would decode to (RFC 3339 strings, Decimals, extras)."""
    value = to_json_value(model.model_dump(mode="python"))
    assert isinstance(value, dict)
    return value


async def _load(
    engine: AsyncEngine,
    sql: str,
    key: str,
    model: type[_ModelT],
    *,
    where: str,
    column: str,
) -> _ModelT | None:
    async with engine.connect() as conn:
        stored = (await conn.execute(text(sql), {"key": key})).scalar_one_or_none()
    if stored is None:
        return None
    try:
        value = loads(stored)
    except ValueError as exc:  # e.g. jsonb wrote 1e5000 back as an integer too long for Python
        raise SchemaDriftError(f"{where}: stored {column} cannot be read as JSON: {exc}") from exc
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors()
        _, path, detail = format_error(errors[0], column)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SchemaDriftError(
            f"{where}: stored {path} no longer matches {model.__name__}: {detail}{more}"
        ) from exc
