"""The event contract as pydantic v2 models (``docs/contract.md`` §1), field names as on the wire.

One-field rules are the field types of :mod:`schemas.fields`; the rules relating fields are the
checks of :mod:`schemas.rules`, which the model validators call. Every payload model keeps unknown
fields (``extra="allow"``): a newer producer's fields survive an older consumer. A broken rule
relating fields has the pydantic error type :data:`RULE_ERROR_TYPE` (reason ``rule_violation``);
every other error is about one field (``schema_violation``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from schemas.codes import EventType
from schemas.fields import (
    DistinctStrings,
    EventId,
    Identifier,
    NonEmptyStr,
    NonNegativeDecimal,
    PositiveDecimal,
    Rfc3339Datetime,
    SchemaVersion,
    json_kind,
)
from schemas.rules import Problem, check_cost, check_policy, check_snapshot, check_tenant

__all__ = [
    "PAYLOAD_MODELS",
    "RULE_ERROR_TYPE",
    "TENANT_PAYLOADS",
    "ActualCost",
    "CostEstimate",
    "Envelope",
    "ProviderModel",
    "RoutingPlanSnapshot",
    "TenantRoutingPolicy",
    "format_error",
]

#: Pydantic error type of a broken cross-field rule (reason code ``rule_violation``).
RULE_ERROR_TYPE: Final = "rule_violation"


def _rule_error(problem: Problem, prefix: str = "") -> PydanticCustomError:
    field = f"{prefix}.{problem.path}" if prefix else problem.path
    return PydanticCustomError(
        RULE_ERROR_TYPE, "{field}: {detail}", {"field": field, "detail": problem.message}
    )


def _field_title(name: str, _info: object) -> str:
    return name  # the wire name, not pydantic's "Inputcostusd"


_PAYLOAD_CONFIG = ConfigDict(
    extra="allow", protected_namespaces=(), field_title_generator=_field_title
)


# --- payloads -------------------------------------------------------------------------------


class ProviderModel(BaseModel):
    """One routing candidate: a provider and one of its models."""

    model_config = _PAYLOAD_CONFIG

    provider: NonEmptyStr
    model: NonEmptyStr


class CostEstimate(BaseModel):
    """The router's cost estimate; only ``totalCostUsd`` is required, the rest is kept as sent."""

    model_config = _PAYLOAD_CONFIG

    totalCostUsd: NonNegativeDecimal


class RoutingPlanSnapshot(BaseModel):
    """Payload of ``routing.snapshot``: the routing decision for one request.

    Rule: :func:`schemas.rules.check_snapshot`; the envelope's :func:`~schemas.rules.check_tenant`
    is checked by :class:`Envelope`.
    """

    model_config = _PAYLOAD_CONFIG

    snapshotId: StrictStr
    strategy: StrictStr
    resolvedAlias: StrictStr
    candidateCount: Annotated[StrictInt, Field(ge=1)]
    timestamp: Rfc3339Datetime
    costEstimate: CostEstimate
    tenantId: Identifier
    primary: ProviderModel
    fallbacks: list[ProviderModel]

    @model_validator(mode="after")
    def _check_rules(self) -> RoutingPlanSnapshot:
        problem = check_snapshot(self)
        if problem is not None:
            raise _rule_error(problem)
        return self


class ActualCost(BaseModel):
    """Payload of ``routing.cost``: what one request really cost.

    Rule: :func:`schemas.rules.check_cost` (the total within ``COST_TOLERANCE``).
    """

    model_config = _PAYLOAD_CONFIG

    inputTokens: Annotated[StrictInt, Field(ge=0)]
    outputTokens: Annotated[StrictInt, Field(ge=0)]
    inputCostUsd: NonNegativeDecimal
    outputCostUsd: NonNegativeDecimal
    totalCostUsd: NonNegativeDecimal
    provider: NonEmptyStr

    @model_validator(mode="after")
    def _check_rules(self) -> ActualCost:
        problem = check_cost(self)
        if problem is not None:
            raise _rule_error(problem)
        return self


class TenantRoutingPolicy(BaseModel):
    """Payload of ``tenant.policy``: a tenant's provider rules.

    Rule: :func:`schemas.rules.check_policy` (disjoint lists, where the preferred provider may
    be); the envelope's :func:`~schemas.rules.check_tenant` is checked by :class:`Envelope`.
    """

    model_config = _PAYLOAD_CONFIG

    tenantId: Identifier
    allowedProviders: DistinctStrings
    deniedProviders: DistinctStrings
    preferredProvider: StrictStr | None
    maxCostPerRequestUsd: PositiveDecimal | None
    defaultStrategy: StrictStr

    @model_validator(mode="after")
    def _check_rules(self) -> TenantRoutingPolicy:
        problem = check_policy(self)
        if problem is not None:
            raise _rule_error(problem)
        return self


#: The payload model of each event type.
PAYLOAD_MODELS: Final[
    dict[EventType, type[RoutingPlanSnapshot | ActualCost | TenantRoutingPolicy]]
] = {
    EventType.SNAPSHOT: RoutingPlanSnapshot,
    EventType.COST: ActualCost,
    EventType.POLICY: TenantRoutingPolicy,
}
#: The event types whose payload names its tenant, which must be the envelope's (``check_tenant``).
TENANT_PAYLOADS: Final = frozenset(
    t for t, m in PAYLOAD_MODELS.items() if "tenantId" in m.model_fields
)


# --- errors ---------------------------------------------------------------------------------


def format_error(error: ErrorDetails, prefix: str = "") -> tuple[bool, str, str]:
    """``(is_rule, path, detail)`` for one pydantic error; the message is ``f"{path}: {detail}"``.

    ``("fallbacks", 1, "model")`` under prefix ``"payload"`` reads ``payload.fallbacks[1].model``.
    Values are never echoed beyond a few dozen characters.
    """
    path = prefix
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    ctx = error.get("ctx") or {}
    if error["type"] == RULE_ERROR_TYPE:
        field = f"{path}.{ctx['field']}" if path else str(ctx["field"])
        return True, field, str(ctx["detail"])
    detail = error["msg"]
    if error["type"] in _TYPE_ERRORS:
        detail = f"{detail}, got {json_kind(error['input'])}"
    return False, path or "(root)", detail


_TYPE_ERRORS = frozenset(
    {"string_type", "int_type", "list_type", "model_type", "dict_type", "model_attributes_type"}
)


# --- the envelope ---------------------------------------------------------------------------


class Envelope(BaseModel):
    """One Kafka record value: the envelope and its payload, with every rule of §1.

    ``payload`` stays the dict as received (unknown fields included); :attr:`payload_model` is the
    validated model of ``type``. Raises ``pydantic.ValidationError``; a broken cross-field rule
    has the error type :data:`RULE_ERROR_TYPE`. ``schemaVersion`` above 1 is refused here; the
    decoder tells it apart as ``unsupported_schema_version``.
    """

    model_config = ConfigDict(
        extra="allow", protected_namespaces=(), field_title_generator=_field_title
    )

    eventId: EventId
    type: EventType
    schemaVersion: SchemaVersion
    occurredAt: Rfc3339Datetime
    tenantId: Identifier
    requestId: Identifier | None = Field(
        default=None, description="Required for routing.snapshot and routing.cost."
    )
    payload: dict[str, Any]

    _payload_model: RoutingPlanSnapshot | ActualCost | TenantRoutingPolicy | None = PrivateAttr(
        default=None
    )

    @model_validator(mode="after")
    def _check_payload(self) -> Envelope:
        if self.requestId is None and self.type is not EventType.POLICY:
            raise PydanticCustomError(
                "missing", "requestId: Field required for {type}", {"type": str(self.type)}
            )
        model = PAYLOAD_MODELS[self.type]
        try:
            parsed = model.model_validate(self.payload)
        except ValidationError as exc:
            is_rule, path, detail = format_error(exc.errors()[0], "payload")
            if is_rule:
                raise _rule_error(Problem(path, detail)) from None
            raise PydanticCustomError(
                "payload_invalid", "{path}: {detail}", {"path": path, "detail": detail}
            ) from None
        problem = (
            check_tenant(self.payload["tenantId"], self.tenantId)
            if self.type in TENANT_PAYLOADS
            else None
        )
        if problem is not None:
            raise _rule_error(problem, "payload")
        self._payload_model = parsed
        return self

    @property
    def payload_model(self) -> RoutingPlanSnapshot | ActualCost | TenantRoutingPolicy:
        """The payload validated as the model of :attr:`type`."""
        assert self._payload_model is not None  # set by the validator of every instance
        return self._payload_model
