"""The rounds of one table in one transaction: offer candidates, settle them, repeat.

The batch arrives as :class:`~.columns.Columns`. Per table, each round offers the newest
remaining candidate of every row and field in one statement (:mod:`.statement`) and settles
what it reports: applied, stale, another tenant's, an unknown tenant, held (``park``: its
``"ExecutionRecord"`` row does not exist; every candidate of the row and field is held, the
caller keeps them), or offered again next round (a concurrent writer won, or an older candidate
stands behind a rejected one).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.outcomes import Outcome
from consumer.pipeline.columns import APPLIED, HELD, STALE, Columns, EventResult
from consumer.pipeline.statement import Item, Report, RoundStatement
from consumer.tables import EXECUTION_RECORD, TargetTable
from schemas import EventType, ReasonCode

__all__ = ["Rounds"]

#: Bound on consecutive rounds that settle nothing: every other round settles at least one
#: candidate, so rounds are bounded by the batch; these repeat only while concurrent writers
#: keep changing the same rows under us.
_MAX_IDLE_ROUNDS: Final = 1000


class Rounds:
    """The rounds of one table in one transaction: offer candidates, settle, repeat.

    ``park``: a missing ``"ExecutionRecord"`` row is never created; its candidates are ``held``.
    """

    def __init__(
        self,
        conn: AsyncConnection,
        table: TargetTable,
        cols: Columns,
        results: list[EventResult | None],
        isolate: bool,
        *,
        park: bool = False,
    ) -> None:
        self._table = table
        self._cols = cols
        self._results = results
        #: Rows of this table carry a tenant and may be missing (else: "Tenant", never created).
        self._is_execution = table is EXECUTION_RECORD
        self._creates_rows = self._is_execution and not park
        self._statement = RoundStatement(
            conn, table, cols, isolate=isolate, creates_rows=self._creates_rows
        )

    async def run(self, by_type: dict[EventType, list[int]]) -> int:
        """Settle every candidate of this table's event types; return the statements run."""
        cols, width = self._cols, len(self._table.fields)
        # Per field, per row key: the row's candidates, newest first.
        queues: list[dict[str, list[int]]] = []
        for field in self._table.fields:
            per_key: dict[str, list[int]] = {}
            for i in by_type.get(field.event_type, ()):
                per_key.setdefault(cols.key[i], []).append(i)
            for queue in per_key.values():
                if len(queue) > 1:
                    queue.sort(key=cols.version, reverse=True)
            queues.append(per_key)
        left = sum(len(q) for per_key in queues for q in per_key.values())
        idle = 0
        while left:
            keys: dict[str, None] = {}
            for per_key in queues:
                keys.update(dict.fromkeys(per_key))
            items = [self._item(key, queues, width) for key in keys]
            rejected: dict[int, EventResult] = {}
            unfillable: set[int] = set()
            report = await self._statement.offer(items, rejected, unfillable)
            for item in items:
                for n, head in enumerate(item.heads):
                    if head is not None:
                        self._settle_field(
                            item.key, n, head, queues[n], report, rejected, unfillable
                        )
            before, left = left, sum(len(q) for per_key in queues for q in per_key.values())
            idle = idle + 1 if left == before else 0
            if idle >= _MAX_IDLE_ROUNDS:
                raise RuntimeError(
                    f'applying "{self._table.name}": rows kept changing under the batch for '
                    f"{_MAX_IDLE_ROUNDS} rounds"
                )
        return self._statement.count

    def _item(self, key: str, queues: list[dict[str, list[int]]], width: int) -> Item:
        heads = [per_key[key][0] if key in per_key else None for per_key in queues]
        first, second = heads[0], heads[-1]
        tenants = self._cols.tenant
        if (
            width == 2
            and first is not None
            and second is not None
            and tenants[first] != tenants[second]
        ):
            heads[1] = None  # one tenant per row statement: the cost waits a round
        return Item(key, tuple(heads))

    def _settle_field(
        self,
        key: str,
        n: int,
        head: int,
        per_key: dict[str, list[int]],
        report: Report,
        rejected: dict[int, EventResult],
        unfillable: set[int],
    ) -> None:
        queue = per_key[key]
        if head in unfillable:
            # The row is missing and cannot be created: no older candidate can do better.
            for i in queue:
                self._results[i] = rejected[head]
            left: list[int] = []
        elif head in rejected:
            # Copies of the refused record (a producer's retry storm re-sending it) share its
            # verdict: same version, same text, the same refusal; no statement each.
            verdict = rejected[head]
            cols = self._cols
            same = 1
            while same < len(queue) and cols.is_copy(queue[same], head):
                same += 1
            for i in queue[:same]:
                self._results[i] = verdict
            left = queue[same:]
        else:
            left = self._settle(key, n, queue, report)
        if left:
            per_key[key] = left
        else:
            del per_key[key]

    def _settle(self, key: str, n: int, queue: list[int], report: Report) -> list[int]:
        """Outcomes for field ``n`` of row ``key`` from the round's report; return what is left.

        ``queue`` holds the row's candidates for the field, newest first; its head was offered.
        """
        cols, results = self._cols, self._results
        head = queue[0]
        row = report.rows.get(key)
        if row is not None and row.passes[n] is False:
            # Refused by the guards before writing: no row, another tenant, or stale.
            if not row.found:
                if self._creates_rows:  # a missing row is always offered: cannot happen
                    return queue
                # Every version is held, not just the newest: which one wins is decided once
                # the row exists (its tenant may refuse the newest).
                verdict = HELD if self._is_execution else None
                for i in queue:
                    results[i] = verdict or _unknown_tenant(cols.tenant[i])
                return []
            row_tenant = row.tenant if self._is_execution else None
            remaining: list[int] = []
            for i in queue:
                if row_tenant is not None and cols.tenant[i] != row_tenant:
                    results[i] = _mismatch(cols.tenant[i], key)
                else:
                    remaining.append(i)
            if remaining and remaining[0] == head:
                # The head matched the row's tenant: the stored version is the same or newer,
                # so it and everything older are stale.
                for i in remaining:
                    results[i] = STALE
                return []
            return remaining  # the newest of the row's tenant goes next round
        if row is not None and row.lost[n]:
            return queue  # offered, yet not the row's value: a concurrent writer won. Next round.
        # Written as offered. A row not reported keeps the candidates' tenant.
        results[head] = APPLIED
        if not self._is_execution:
            row_tenant = None
        elif row is None:
            row_tenant = cols.tenant[head]
        else:
            row_tenant = row.tenant_after
        for i in queue[1:]:
            tenant = cols.tenant[i]
            mismatched = row_tenant is not None and tenant != row_tenant
            results[i] = _mismatch(tenant, key) if mismatched else STALE
        return []


def _mismatch(tenant: str, request: str) -> EventResult:
    # The row's own tenant is not named: the dead-letter topic must not leak it.
    return EventResult(
        Outcome.DEAD_LETTERED,
        ReasonCode.TENANT_MISMATCH,
        f'tenantId {tenant!r} differs from the tenantId of "ExecutionRecord" {request!r}; '
        "the row is left untouched",
    )


def _unknown_tenant(tenant: str) -> EventResult:
    return EventResult(
        Outcome.DEAD_LETTERED,
        ReasonCode.UNKNOWN_TENANT,
        f'tenantId {tenant!r}: no such "Tenant" row',
    )
