"""The rules that relate two or more fields (reason code ``rule_violation``), each written once.

Every check returns the broken rule as a :class:`Problem` (the field path inside the payload and
a readable message), or ``None`` when the rule holds. The pydantic models call them in their
validators; the consumer's fast decoder calls the same functions on its own structs, which have
the same field names. Money is an ``int`` or a :class:`~decimal.Decimal` (as :func:`schemas.loads`
reads JSON numbers) and the arithmetic is exact; the fast decoder's binary floats are checked
soundly (:func:`check_cost`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, Inexact, Overflow
from typing import Any, Final, NamedTuple, Protocol

from schemas.codes import EventType
from schemas.fields import shorten

__all__ = [
    "COST_TOLERANCE",
    "PAYLOAD_RULES",
    "Problem",
    "check_cost",
    "check_policy",
    "check_snapshot",
    "check_tenant",
    "cost_total_matches",
]

#: ``totalCostUsd`` may differ from ``inputCostUsd + outputCostUsd`` by at most this much.
COST_TOLERANCE: Final = Decimal("0.000001")

# Everyday amounts fit 50 digits: the sum is exact, or Inexact says it was not (then the slow way).
_EXACT: Final = Context(prec=50, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact, Overflow])
_EXACT_ADD: Final = _EXACT.add
_EXACT_SUBTRACT: Final = _EXACT.subtract
# Beyond this many digits the comparison is rounded: a hostile 1E+999999999 costs microseconds.
_MAX_PRECISION: Final = 10_000
# Binary floats: amounts within +-1e6 are each within 2**-33 of the decimal written (the nearest
# binary64), the sum and difference round by at most 2**-32 more: under 1e-9 in all, so a float
# difference within COST_TOLERANCE - 1e-9 proves the decimal one within COST_TOLERANCE.
_FLOAT_RANGE: Final = 1e6
_FLOAT_TOLERANCE: Final = 0.000000999


class Problem(NamedTuple):
    """A broken rule: ``path`` of the field inside the payload, and what is wrong."""

    path: str
    message: str


class _Snapshot(Protocol):
    @property
    def candidateCount(self) -> int: ...
    @property
    def fallbacks(self) -> Sized: ...


class _Cost(Protocol):
    @property
    def inputCostUsd(self) -> Decimal | int | float: ...
    @property
    def outputCostUsd(self) -> Decimal | int | float: ...
    @property
    def totalCostUsd(self) -> Decimal | int | float: ...


class _Policy(Protocol):
    @property
    def allowedProviders(self) -> Sequence[str]: ...
    @property
    def deniedProviders(self) -> Sequence[str]: ...
    @property
    def preferredProvider(self) -> str | None: ...


def check_snapshot(snapshot: _Snapshot) -> Problem | None:
    """``1 + len(fallbacks) <= candidateCount``: the primary and each fallback are candidates."""
    fallbacks = len(snapshot.fallbacks)
    if 1 + fallbacks <= snapshot.candidateCount:
        return None
    return Problem(
        "fallbacks",
        f"1 primary + {fallbacks} fallbacks exceed candidateCount {snapshot.candidateCount}",
    )


def check_cost(cost: _Cost) -> Problem | None:
    """``totalCostUsd == inputCostUsd + outputCostUsd`` within :data:`COST_TOLERANCE`.

    Exact for ints and Decimals. With a binary float among the amounts (each the nearest float
    to the decimal written) it is sound, not complete: ``None`` proves the rule, and anything it
    cannot prove in floats (amounts beyond +-1e6, a difference within 1e-9 of the tolerance) is
    reported as a problem, for the exact decimals to decide.
    """
    total, cost_in, cost_out = cost.totalCostUsd, cost.inputCostUsd, cost.outputCostUsd
    if isinstance(total, float) or isinstance(cost_in, float) or isinstance(cost_out, float):
        t, a, b, bound = float(total), float(cost_in), float(cost_out), _FLOAT_RANGE
        if (
            -bound <= t <= bound
            and -bound <= a <= bound
            and -bound <= b <= bound
            and abs(t - (a + b)) <= _FLOAT_TOLERANCE
        ):
            return None
        return Problem("totalCostUsd", f"not provably within {COST_TOLERANCE} in binary floats")
    if cost_total_matches(total, cost_in, cost_out):
        return None
    return Problem(
        "totalCostUsd",
        f"{shorten(str(total))} is not inputCostUsd + outputCostUsd "
        f"({shorten(str(cost_in))} + {shorten(str(cost_out))}) within {COST_TOLERANCE}",
    )


def cost_total_matches(total: Decimal | int, a: Decimal | int, b: Decimal | int) -> bool:
    """Whether ``|total - (a + b)| <= COST_TOLERANCE``, exactly (finite numbers only)."""
    try:
        difference = _EXACT_SUBTRACT(total, _EXACT_ADD(a, b))
    except ArithmeticError:  # not exact in 50 digits
        numbers = (Decimal(total), Decimal(a), Decimal(b))
        top = max((n.adjusted() for n in numbers if n), default=0)
        bottom = min(int(n.as_tuple().exponent) for n in numbers)
        precision = min(max(top - bottom + 3, 28), _MAX_PRECISION)
        wide = Context(prec=precision, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[])
        difference = wide.subtract(numbers[0], wide.add(numbers[1], numbers[2]))
    return bool(difference.copy_abs() <= COST_TOLERANCE)


def check_policy(policy: _Policy) -> Problem | None:
    """Allowed and denied providers are disjoint; ``preferredProvider`` is never denied and is
    in ``allowedProviders`` when that list is not empty (an empty list allows every provider)."""
    allowed, denied = policy.allowedProviders, policy.deniedProviders
    both = set(allowed).intersection(denied)
    if both:
        return Problem("deniedProviders", f"{shorten(min(both))} is both allowed and denied")
    preferred = policy.preferredProvider
    if preferred is None:
        return None
    if preferred in denied:
        return Problem("preferredProvider", f"{shorten(preferred)} is denied")
    if allowed and preferred not in allowed:
        return Problem("preferredProvider", f"{shorten(preferred)} is not in allowedProviders")
    return None


def check_tenant(payload_tenant: str, tenant_id: str) -> Problem | None:
    """A payload's ``tenantId`` equals its envelope's (for the types whose payload has one)."""
    if payload_tenant == tenant_id:
        return None
    return Problem(
        "tenantId",
        f"{payload_tenant[:64]!r} differs from the envelope's tenantId {tenant_id[:64]!r}",
    )


#: The payload rules of each event type (the tenant rule, :func:`check_tenant`, is the envelope's).
PAYLOAD_RULES: Final[dict[EventType, Callable[[Any], Problem | None]]] = {
    EventType.SNAPSHOT: check_snapshot,
    EventType.COST: check_cost,
    EventType.POLICY: check_policy,
}
