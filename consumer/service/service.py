"""``routing-persistence run``: the consume loop, rebalances, signals, metrics and health.

One :class:`Service` owns one aiokafka consumer (in the group ``settings.group_id``, manual
commits), one ``acks=all`` producer for dead letters
(:func:`~consumer.pipeline.deadletter.new_dead_letter_producer`), one database engine and the HTTP
endpoint.
Batches are fetched, applied and handed over strictly one after the other:

1. ``getmany(max_records=batch_max_records)``: a bounded batch (memory stays bounded too);
2. :meth:`BatchProcessor.process`: decode, dead-letter
   (acknowledged), apply in one transaction; transient faults are retried inside, forever;
3. hand ``result.commit_offsets`` to the committer and fetch the next batch at once.

The committer is one task that commits, for the partitions still assigned, the newest offsets
handed to it, one commit at a time: a broker round trip per batch is no longer on the apply path,
and while one commit is in flight the offsets of the batches finished meanwhile are merged into
the next (offsets only grow, so the newest covers the older). Only finished batches hand offsets
over, so the committed offset of a partition never passes a record that is not in PostgreSQL (or,
acknowledged, on the dead-letter topic). A failed commit is only logged: the records are
redelivered after the rebalance or restart that caused it, and idempotence makes that harmless.

Measured with the benchmark (``bench/``, interleaved pairs on the shared 2-core machine): the
committer made the backlog 1.07-1.24x faster and brought the live p99 at 12,000 events/s to
0.49-0.83x of what it was. Fetching and decoding batch N+1 while N is applied was tried too and
dropped: no backlog gain (0.97x over four pairs) and a live p50 several times worse, because
decoding runs on the same event loop as the apply and holds it for tens of milliseconds while
PostgreSQL's answers wait.

**Rebalance.** aiokafka calls :meth:`_Listener.on_partitions_revoked` from its coordination task
before it rejoins the group, while the member's generation is still valid. The listener waits for
the lock the loop holds around step 2, then for the committer to commit what it was handed, so
the batch in hand is applied and committed before the partitions go; batches fetched after that,
until the new assignment, are dropped unhandled (the new assignment starts every partition at its
committed offset), so a clean rebalance handles no record twice. The wait is bounded
(``shutdown_timeout_s``): past it (the database is down, say) the revoked partitions are marked
abandoned and the loop will not commit them; the records are redelivered to their new owner. The
commit itself cannot deadlock with the listener: it takes only aiokafka's own commit lock, which
the rebalance path never holds while calling the listener.

**Shutdown.** SIGTERM or SIGINT stops fetching; the batch in hand is finished and committed (the
committer drained), the clients are closed (the consumer leaves the group, so the partitions move
at once) and :func:`run_service` returns 0. If that takes longer than ``shutdown_timeout_s`` (or a
second signal arrives) the batch is abandoned uncommitted and the exit code is 1. A bug or a
configuration error is logged as ``consumer.fatal`` and the exit code is 1 (2 for configuration),
with nothing committed for the batch that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import (
    AuthenticationFailedError,
    CommitFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from aiokafka.structs import ConsumerRecord, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import __version__
from consumer.db import create_engine
from consumer.errors import ConfigurationError, TransientError
from consumer.kafka import client_options, find_permanent_connect_error
from consumer.logs import get_logger
from consumer.pipeline.batch import BatchProcessor, BatchResult
from consumer.pipeline.deadletter import new_dead_letter_producer
from consumer.service.health import HealthServer, HealthState
from consumer.service.metrics import CONTENT_TYPE, ServiceMetrics
from consumer.settings import Settings

__all__ = ["Service", "run_service"]

_log = get_logger(__name__)

_T = TypeVar("_T")

#: A commit that has not returned after this long (broker unreachable) is given up on: the next
#: successful commit covers its records, or they are redelivered.
_COMMIT_TIMEOUT_S = 30.0
#: Bound on each broker/database probe of the refresh timers.
_PROBE_TIMEOUT_S = 5.0
#: The database writability check runs at least this often.
_DB_CHECK_MAX_INTERVAL_S = 5.0
#: Closing a client never takes longer than this.
_CLOSE_TIMEOUT_S = 10.0

#: Kafka errors that no retry can fix: a wrong credential or a missing ACL.
_FATAL_KAFKA_ERRORS = (
    AuthenticationFailedError,
    GroupAuthorizationFailedError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

RecordBatch = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no types
    def __init__(self, service: Service) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._service._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._service._on_assigned(set(assigned))


class Service:
    """One running consumer instance; :meth:`run` returns the process exit code.

    ``metrics_port`` overrides ``settings.metrics_port`` (``0`` binds any free port, ``None``
    keeps the setting, where ``0`` means off); after start, :attr:`metrics_port` is the bound
    port. :meth:`request_stop` is what SIGTERM does; tests call it directly.
    """

    def __init__(self, settings: Settings, *, metrics_port: int | None = None) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        batch_timeout_s = settings.batch_timeout_ms / 1000
        self.health = HealthState(
            liveness_window_s=max(
                30.0,
                3 * batch_timeout_s
                + settings.db_statement_timeout_ms / 1000
                + settings.retry_max_delay_s,
            )
        )
        self._requested_port = settings.metrics_port if metrics_port is None else metrics_port
        self._serve_http = metrics_port is not None or settings.metrics_port != 0
        #: The bound HTTP port once started (``None`` when the endpoint is off).
        self.metrics_port: int | None = None
        self._stop = asyncio.Event()
        self._abort = asyncio.Event()
        self._batch_lock = asyncio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._abandoned: set[TopicPartition] = set()
        #: Between "partitions revoked" and "partitions assigned": fetched batches are dropped.
        self._is_rebalancing = False
        self._committed: dict[TopicPartition, int] = {}
        #: Offsets of finished batches not yet handed to a commit (newest per partition).
        self._to_commit: dict[TopicPartition, int] = {}
        #: Commits ``_to_commit`` until it is empty; ``None`` or done when there is nothing to do.
        self._committer: asyncio.Task[None] | None = None
        #: Record time (Unix s) of the oldest fetched record not yet committed, per partition.
        self._pending_since: dict[TopicPartition, float] = {}
        #: When a lag was first seen with no record of it fetched yet (Unix s), per partition.
        self._lag_seen_since: dict[TopicPartition, float] = {}

    # --- control -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop fetching and shut down gracefully; a second call abandons the batch in hand."""
        if self._stop.is_set():
            self._abort.set()
            return
        _log.info("consumer.stopping", timeout_s=self.settings.shutdown_timeout_s)
        self.health.is_stopping = True
        self._stop.set()

    async def run(self) -> int:
        """Consume until stopped; returns 0 after a clean shutdown, 1 (or 2: configuration) else."""
        server: HealthServer | None = None
        engine: AsyncEngine | None = None
        producer: AIOKafkaProducer | None = None
        consumer: AIOKafkaConsumer | None = None
        timers: list[asyncio.Task[None]] = []
        try:
            if self._serve_http:
                server = HealthServer(self.health, self._render_metrics, port=self._requested_port)
                try:
                    self.metrics_port = await server.start()
                except OSError as exc:
                    raise ConfigurationError(
                        f"cannot serve metrics on port {self._requested_port}: {exc.strerror}; "
                        "set ROUTING_METRICS_PORT (0 turns the endpoint off)"
                    ) from exc
            _log.info(
                "consumer.starting",
                version=__version__,
                group=self.settings.group_id,
                topics=list(self.settings.source_topics),
                database=self.settings.redacted_database_url,
                metrics_port=self.metrics_port,
            )
            engine = create_engine(self.settings)
            timers.append(asyncio.create_task(self._check_database_forever(engine)))
            producer = await self._start_client(self._new_producer, "producer")
            consumer = await self._start_client(self._new_consumer, "consumer")
            if producer is None or consumer is None:
                return 0  # stopped while the broker was unreachable: nothing fetched
            consumer.subscribe(list(self.settings.source_topics), listener=_Listener(self))
            self.health.is_broker_reachable = True
            processor = BatchProcessor(
                self.settings,
                engine,
                producer,
                group_id=self.settings.group_id,
                on_retry=self._on_retry,
                on_database_state=self._on_database_state,
            )
            timers.append(asyncio.create_task(self._refresh_lag_forever(consumer)))
            _log.info("consumer.started", group=self.settings.group_id)
            return await self._consume_until_stopped(consumer, processor)
        except ConfigurationError as exc:
            _log.critical("consumer.fatal", kind="configuration", error=str(exc), exc_info=True)
            return 2
        except TransientError as exc:  # only with retry_max_attempts set: the limit was reached
            _log.critical("consumer.fatal", kind="retries_exhausted", error=str(exc))
            return 1
        except Exception as exc:
            _log.critical("consumer.fatal", kind="bug", error=repr(exc), exc_info=True)
            return 1
        finally:
            self.health.is_stopping = True
            for timer in timers:
                timer.cancel()
            for timer in timers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await timer
            if self._committer is not None and not self._committer.done():
                # Only after an abandoned shutdown or a failure: a clean stop drained it.
                self._committer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._committer
            await self._close(consumer, producer, engine, server)

    # --- the loop ------------------------------------------------------------------------------

    async def _consume_until_stopped(
        self, consumer: AIOKafkaConsumer, processor: BatchProcessor
    ) -> int:
        loop_task = asyncio.create_task(self._consume(consumer, processor))
        stop_task = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if not loop_task.done():
                # Stop requested: the loop fetches nothing more and finishes its batch.
                abort_task = asyncio.create_task(self._abort.wait())
                try:
                    await asyncio.wait(
                        {loop_task, abort_task},
                        timeout=self.settings.shutdown_timeout_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    abort_task.cancel()
                if not loop_task.done():
                    loop_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await loop_task
                    _log.error(
                        "consumer.shutdown_timeout",
                        timeout_s=self.settings.shutdown_timeout_s,
                        detail="the batch in hand was abandoned uncommitted; it is redelivered",
                    )
                    return 1
            return loop_task.result()
        finally:
            stop_task.cancel()
            if not loop_task.done():
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task

    async def _consume(self, consumer: AIOKafkaConsumer, processor: BatchProcessor) -> int:
        backoff = _Backoff(self.settings.retry_initial_delay_s, self.settings.retry_max_delay_s)
        while not self._stop.is_set():
            fetch = asyncio.create_task(
                consumer.getmany(
                    timeout_ms=self.settings.batch_timeout_ms,
                    max_records=self.settings.batch_max_records,
                )
            )
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not fetch.done():
                # Stopping between batches: whatever the fetch would bring is not ours to handle.
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, KafkaError):
                    await fetch
                break
            try:
                batch: RecordBatch = fetch.result()
            except _FATAL_KAFKA_ERRORS as exc:
                raise ConfigurationError(f"Kafka refused this client: {exc!r}") from exc
            except KafkaError as exc:
                # Coordinator and fetch faults surface here; the client recovers by itself.
                delay = backoff.next()
                _log.warning("kafka.unavailable", error=repr(exc), retry_in_s=round(delay, 3))
                self.health.is_broker_reachable = False
                self.health.tick()
                await self._sleep_unless_stopped(delay)
                continue
            backoff.reset()
            self.health.tick()
            if batch:
                async with self._batch_lock:
                    if self._is_rebalancing:
                        # Fetched for an assignment that is being revoked: the next assignment
                        # restarts every partition from its committed offset, so dropping these
                        # loses nothing, while handling them now would handle them twice.
                        continue
                    await self._handle_batch(consumer, processor, batch)
        # Stopping: what the finished batches handed over is committed before the clients close.
        await self._drain_commits(raise_errors=True)
        return 0

    async def _handle_batch(
        self, consumer: AIOKafkaConsumer, processor: BatchProcessor, batch: RecordBatch
    ) -> None:
        size = 0
        for tp, records in batch.items():
            size += len(records)
            if records:
                self._pending_since.setdefault(tp, records[0].timestamp / 1000)
        started = time.monotonic()
        result = await processor.process(batch)
        elapsed = time.monotonic() - started
        self.health.tick()
        self.metrics.batch_size.observe(size)
        self.metrics.batch_duration.observe(elapsed)
        self.metrics.count_outcomes(result.outcomes)
        for reason, count in result.dead_letter_reasons.items():
            self.metrics.dead_letters.labels(reason=reason).inc(count)
        self.metrics.observe_latencies(result.applied_occurred_at)
        self._hand_to_committer(consumer, result)
        _log.debug(
            "batch.handled",
            records=size,
            dead_letters=result.dead_letters,
            seconds=round(elapsed, 4),
        )

    def _hand_to_committer(self, consumer: AIOKafkaConsumer, result: BatchResult) -> None:
        """Queue a finished (durable) batch's offsets; start the committer if it is idle."""
        committer = self._committer
        if committer is not None and committer.done():
            self._committer = None
            committer.result()  # a commit refused for good (configuration) ends the loop here
        # Batches finish in fetch order, so per partition the newest offset is the greatest.
        self._to_commit.update(result.commit_offsets)
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_until_drained(consumer))

    async def _commit_until_drained(self, consumer: AIOKafkaConsumer) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            await self._commit(consumer, offsets)

    async def _drain_commits(self, *, raise_errors: bool) -> None:
        """Wait until every offset handed over so far went through a commit (or failed to)."""
        committer = self._committer
        if committer is None:
            return
        await asyncio.wait({committer})
        if raise_errors and committer is self._committer:
            self._committer = None
            committer.result()

    async def _commit(self, consumer: AIOKafkaConsumer, handed: dict[TopicPartition, int]) -> int:
        """Commit ``handed`` for the partitions still ours; returns how many."""
        offsets = {
            tp: offset
            for tp, offset in handed.items()
            if tp in self._assigned and tp not in self._abandoned
        }
        if len(offsets) < len(handed):
            _log.info(
                "offsets.commit_skipped",
                partitions=_describe(set(handed) - set(offsets)),
                detail="revoked while the batch was in hand; the new owner rereads these records",
            )
        if not offsets:
            return 0
        try:
            await asyncio.wait_for(consumer.commit(offsets), _COMMIT_TIMEOUT_S)
        except (CommitFailedError, RebalanceInProgressError, IllegalStateError) as exc:
            _log.warning(
                "offsets.commit_failed",
                reason="rebalance",
                error=repr(exc),
                detail="the records are redelivered; idempotence makes that harmless",
            )
            return 0
        except _FATAL_KAFKA_ERRORS as exc:
            raise ConfigurationError(f"Kafka refused the offset commit: {exc!r}") from exc
        except (KafkaError, TimeoutError) as exc:
            _log.warning("offsets.commit_failed", reason="broker", error=repr(exc))
            self.health.is_broker_reachable = False
            return 0
        now = time.time()
        for tp, offset in offsets.items():
            self._committed[tp] = offset
            self._pending_since.pop(tp, None)
            self.metrics.committed_offset.labels(topic=tp.topic, partition=str(tp.partition)).set(
                offset
            )
        self.metrics.last_commit_timestamp.set(now)
        return len(offsets)

    # --- rebalance -----------------------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.health.is_in_group = False
        self._is_rebalancing = True
        if revoked:
            acquired = False
            try:
                async with asyncio.timeout(self.settings.shutdown_timeout_s):
                    # Held by the loop from "batch fetched" to "offsets handed to the committer".
                    await self._batch_lock.acquire()
                    acquired = True
                    await self._drain_commits(raise_errors=False)  # the loop raises, not us
            except TimeoutError:
                self._abandoned |= revoked
                _log.warning(
                    "partitions.revoke_timeout",
                    partitions=len(revoked),
                    detail="the batch in hand will not be committed for revoked partitions",
                )
            finally:
                if acquired:
                    self._batch_lock.release()
        for tp in revoked:
            self._to_commit.pop(tp, None)  # not committed by now: the new owner rereads them
        self._assigned -= revoked
        for tp in revoked:
            self._committed.pop(tp, None)
            self._pending_since.pop(tp, None)
            self._lag_seen_since.pop(tp, None)
        self.metrics.remove_partitions(revoked)
        self.metrics.assigned_partitions.set(len(self._assigned))
        _log.info("partitions.revoked", partitions=_describe(revoked))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        # A new generation: what was abandoned in the old one may be committed if it is ours again.
        self._abandoned.clear()
        self._is_rebalancing = False
        self._assigned = set(assigned)
        self.health.is_in_group = True
        self.metrics.rebalances.inc()
        self.metrics.assigned_partitions.set(len(assigned))
        _log.info("partitions.assigned", partitions=_describe(assigned))

    # --- callbacks of the pipeline -------------------------------------------------------------

    def _on_retry(self, exc: BaseException, delay: float) -> None:
        self.metrics.db_retries.inc()
        self.health.tick()  # retrying is progress: the process must not be restarted for it

    def _on_database_state(self, is_writable: bool) -> None:
        self.health.is_database_writable = is_writable

    # --- timers --------------------------------------------------------------------------------

    async def _check_database_forever(self, engine: AsyncEngine) -> None:
        interval = min(self.settings.lag_refresh_interval_s, _DB_CHECK_MAX_INTERVAL_S)
        while True:
            self.health.is_database_writable = await _is_database_writable(engine)
            await asyncio.sleep(interval)

    async def _refresh_lag_forever(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                await self._refresh_lag(consumer)
            except (KafkaError, TimeoutError, OSError) as exc:
                self.health.is_broker_reachable = False
                _log.warning("lag.refresh_failed", error=repr(exc))
            except Exception:  # a bug here must not stop the gauges for good, nor the service
                _log.exception("lag.refresh_failed")
            await asyncio.sleep(self.settings.lag_refresh_interval_s)

    async def _refresh_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Write the lag gauges from the broker's end offsets and the group's committed offsets."""
        tps = sorted(self._assigned)
        if not tps:
            # Still a useful probe of the broker while the group gives us nothing.
            await asyncio.wait_for(consumer.topics(), _PROBE_TIMEOUT_S)
            self.health.is_broker_reachable = True
            return
        ends: dict[TopicPartition, int] = await asyncio.wait_for(
            consumer.end_offsets(tps), _PROBE_TIMEOUT_S
        )
        self.health.is_broker_reachable = True
        for tp in tps:
            if tp not in self._committed:
                found = await asyncio.wait_for(consumer.committed(tp), _PROBE_TIMEOUT_S)
                if found is not None and tp not in self._committed:
                    self._committed[tp] = found
        never = [tp for tp in tps if tp not in self._committed]
        starts: dict[TopicPartition, int] = (
            await asyncio.wait_for(consumer.beginning_offsets(never), _PROBE_TIMEOUT_S)
            if never
            else {}
        )
        now = time.time()
        for tp in tps:
            if tp not in self._assigned:
                continue  # revoked during the awaits above: its series are gone, keep them gone
            committed = self._committed.get(tp)
            base = committed if committed is not None else starts.get(tp, 0)
            lag = max(0, ends[tp] - base)
            if lag == 0:
                self._lag_seen_since.pop(tp, None)
                age = 0.0
            elif tp in self._pending_since:
                age = max(0.0, now - self._pending_since[tp])
            else:
                # Not fetched yet, so its timestamp is unknown: report how long we have seen it.
                age = now - self._lag_seen_since.setdefault(tp, now)
            self.metrics.set_partition(
                tp, end_offset=ends[tp], committed=committed, lag=lag, lag_seconds=age
            )

    # --- clients -------------------------------------------------------------------------------

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.settings.batch_max_records,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=min(3000, self.settings.kafka_session_timeout_ms // 3),
        )

    def _new_producer(self) -> AIOKafkaProducer:
        # acks=all, sized for the largest accepted record, not idempotent: see its docstring.
        return new_dead_letter_producer(self.settings)

    async def _start_client(self, make: Callable[[], _T], what: str) -> _T | None:
        """Start a fresh client until it connects; ``None`` when stopped before it could."""
        backoff = _Backoff(self.settings.retry_initial_delay_s, self.settings.retry_max_delay_s)
        while not self._stop.is_set():
            client: Any = make()
            try:
                await client.start()
            except _FATAL_KAFKA_ERRORS as exc:
                await _quietly(client.stop())
                raise ConfigurationError(f"Kafka refused the {what}: {exc!r}") from exc
            except (KafkaError, OSError) as exc:
                await _quietly(client.stop())
                # aiokafka reports a refused login or certificate like a broker that is down:
                # ask once which it was, so wrong credentials stop the process instead of looping.
                cause = await find_permanent_connect_error(self.settings)
                if cause is not None:
                    raise ConfigurationError(f"Kafka refused the {what}: {cause!r}") from cause
                delay = backoff.next()
                self.health.is_broker_reachable = False
                self.health.tick()
                _log.warning(
                    "kafka.unavailable", client=what, error=repr(exc), retry_in_s=round(delay, 3)
                )
                await self._sleep_unless_stopped(delay)
                continue
            return client  # type: ignore[no-any-return]
        return None

    async def _close(
        self,
        consumer: AIOKafkaConsumer | None,
        producer: AIOKafkaProducer | None,
        engine: AsyncEngine | None,
        server: HealthServer | None,
    ) -> None:
        # The consumer first: leaving the group hands the partitions over at once.
        if consumer is not None:
            await _quietly(consumer.stop())
        if producer is not None:
            await _quietly(producer.stop())
        if engine is not None:
            await _quietly(engine.dispose())
        if server is not None:
            await _quietly(server.close())
        _log.info("consumer.stopped")

    # --- helpers -------------------------------------------------------------------------------

    def _render_metrics(self) -> tuple[bytes, str]:
        return self.metrics.render(), CONTENT_TYPE

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)


class _Backoff:
    """Capped exponential backoff with full jitter (``initial * 2**n``, at most ``cap``)."""

    def __init__(self, initial: float, cap: float) -> None:
        self._initial = initial
        self._cap = cap
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self._cap, self._initial * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self._attempt = 0


async def _is_database_writable(engine: AsyncEngine) -> bool:
    """True when a session can write (connected, not a standby, not read-only by default)."""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S), engine.connect() as conn:
            read_only = await conn.scalar(text("SELECT current_setting('transaction_read_only')"))
    except Exception as exc:  # any failure means "not now"; the loop's retries say why
        _log.debug("database.check_failed", error=type(exc).__name__)
        return False
    return bool(read_only == "off")


async def _quietly(closing: Awaitable[Any]) -> None:
    try:
        await asyncio.wait_for(closing, _CLOSE_TIMEOUT_S)
    except Exception as exc:  # closing is best effort; the process is exiting anyway
        _log.warning("consumer.close_failed", error=repr(exc))


def _describe(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in tps)


async def run_service(settings: Settings, *, metrics_port: int | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process exit code (see the module doc)."""
    service = Service(settings, metrics_port=metrics_port)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, service.request_stop)
    try:
        return await service.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
