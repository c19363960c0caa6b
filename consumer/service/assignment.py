"""Which partitions this instance owns, and the rebalance hand-over.

aiokafka calls :meth:`Assignment.on_partitions_revoked` from its coordination task before it
rejoins the group, while the member's generation is still valid. The revocation waits for the
batch in hand (the ``batch_lock`` the loop holds from "fetched" to "offsets handed over"), then
for the committer to commit what it was handed, so a clean rebalance handles no record twice.
Batches fetched between revocation and the next assignment are dropped unhandled: the new
assignment starts every partition at its committed offset. The wait is bounded
(``shutdown_timeout_s``): past it (the database is down, say) the revoked partitions are marked
abandoned and nothing more is committed for them; their new owner rereads the records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from consumer.kafka import partition_names
from consumer.logs import get_logger
from consumer.service.health import HealthState
from consumer.service.metrics import ServiceMetrics

__all__ = ["Assignment"]

_log = get_logger(__name__)


class Assignment(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no types
    """The partitions this member owns now; the rebalance listener of its consumer.

    ``drain_commits()`` waits until the offsets handed so far are committed; ``forget(tps)``
    drops what the service keeps about revoked partitions (offsets to commit, lag state).
    """

    def __init__(
        self,
        *,
        batch_lock: asyncio.Lock,
        timeout_s: float,
        health: HealthState,
        metrics: ServiceMetrics,
        drain_commits: Callable[[], Awaitable[None]],
        forget: Callable[[set[TopicPartition]], None],
    ) -> None:
        self._batch_lock = batch_lock
        self._timeout_s = timeout_s
        self._health = health
        self._metrics = metrics
        self._drain_commits = drain_commits
        self._forget = forget
        self.assigned: set[TopicPartition] = set()
        #: Revoked while a batch of theirs could not finish in time: never committed now.
        self._abandoned: set[TopicPartition] = set()
        #: Between "revoked" and "assigned": whatever is fetched belongs to no one.
        self.is_rebalancing = False

    def is_ours(self, tp: TopicPartition) -> bool:
        """Whether offsets of ``tp`` may be committed by this member now."""
        return tp in self.assigned and tp not in self._abandoned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish the batch in hand and its commit, then let the partitions go."""
        revoked = set(revoked)
        self._health.is_in_group = False
        self.is_rebalancing = True
        if revoked:
            acquired = False
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._batch_lock.acquire()
                    acquired = True
                    await self._drain_commits()
            except TimeoutError:
                self._abandoned |= revoked
                _log.warning(
                    "partitions.revoke_timeout",
                    partitions=len(revoked),
                    detail="the batch in hand will not be committed for revoked partitions",
                )
            except Exception as exc:  # the loop raises the committer's errors, not the listener
                _log.warning("partitions.revoke_commit_failed", error=type(exc).__name__)
            finally:
                if acquired:
                    self._batch_lock.release()
        self.assigned -= revoked
        self._forget(revoked)
        self._metrics.assigned_partitions.set(len(self.assigned))
        _log.info("partitions.revoked", partitions=partition_names(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """A new generation: what was abandoned in the old one may be committed if ours again."""
        self._abandoned.clear()
        self.is_rebalancing = False
        self.assigned = set(assigned)
        self._health.is_in_group = True
        self._metrics.rebalances.inc()
        self._metrics.assigned_partitions.set(len(self.assigned))
        _log.info("partitions.assigned", partitions=partition_names(self.assigned))
