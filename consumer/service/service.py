"""``routing-persistence run``: the consume loop and the lifecycle around it.

One :class:`Service` owns one aiokafka consumer (group ``settings.group_id``, manual commits,
``read_committed``), one ``acks=all`` producer for dead letters, one database engine and the
HTTP endpoint. Its loop fetches a bounded batch, has :class:`~consumer.pipeline.batch.
BatchProcessor` make it durable, hands the offsets to the :class:`.committer.OffsetCommitter`
and fetches the next. In a backlog (full batches, more records buffered already) batches
overlap: up to two are in the database while the next is decoded, and they are handed over in
the order fetched. The parts that own state are apart: :class:`.assignment.Assignment`
(partitions, rebalances), :class:`.committer.OffsetCommitter`, :class:`.lag.LagGauges`,
:class:`.health.HealthState`, and :class:`.held.HeldFieldsTimer`, which releases held fields
beside the loop (a bug there stops the service like one in the loop).

Faults: transient ones are retried forever (:mod:`consumer.retry`) while ``/readyz`` says 503;
a configuration error exits 2 with its message; a bug exits 1; nothing of a failed batch is
committed. SIGTERM or SIGINT: a batch in hand is finished and committed, then the process exits
0; past ``shutdown_timeout_s`` (or on a second signal) the batch is abandoned and it exits 1.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import __version__
from consumer.db import create_engine, is_database_writable
from consumer.errors import (
    BrokerUnavailable,
    ConfigurationError,
    TransientError,
    describe_error,
    sqlstate_of,
)
from consumer.kafka import (
    FATAL_KAFKA_ERRORS,
    ISOLATION_LEVEL,
    client_options,
    find_permanent_connect_error,
)
from consumer.logs import get_logger
from consumer.pipeline.batch import Batch, BatchProcessor, BatchResult, Decoded
from consumer.pipeline.deadletter import DeadLetterWriter, new_dead_letter_producer
from consumer.retry import observing_retries, retrying
from consumer.service.assignment import Assignment
from consumer.service.committer import OffsetCommitter
from consumer.service.health import HealthServer, HealthState
from consumer.service.held import HeldFieldsTimer
from consumer.service.lag import LagGauges
from consumer.service.metrics import CONTENT_TYPE, ServiceMetrics
from consumer.settings import Settings

__all__ = ["Service", "run_service"]

_log = get_logger(__name__)
_T = TypeVar("_T")

#: Bound on each database probe; the probe runs at least this often.
_PROBE_TIMEOUT_S: Final = 5.0
_DB_CHECK_MAX_INTERVAL_S: Final = 5.0
#: How often the consumer's positions are compared with what batches handed for commit.
_POSITIONS_INTERVAL_S: Final = 1.0
_POSITION_WAIT_S: Final = 0.1
#: Closing a client never takes longer than this.
_CLOSE_TIMEOUT_S: Final = 10.0
#: How old the consumer's topic metadata may get. A changed partition count is only seen at a
#: refresh, and only then does the group rebalance: with aiokafka's default (5 min) partitions
#: an operator adds, or source topics created after the start, went unread that long.
_METADATA_MAX_AGE_MS: Final = 10_000
#: Batches of a backlog in the database at once (each in its lanes), beside the one decoding.
_IN_FLIGHT: Final = 2
#: Records decoded between two turns of the event loop while batches are in flight.
_DECODE_CHUNK: Final = 250
#: Bound on taking buffered records (see :meth:`Service._buffered`).
_BUFFERED_FETCH_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A batch submitted to the database, not handed over yet."""

    task: asyncio.Task[BatchResult]
    size: int  # records
    started: float  # time.monotonic() at submission


class Service:
    """One running consumer instance; :meth:`run` returns the process exit code.

    ``metrics_port`` overrides ``settings.metrics_port`` (``0`` binds any free port); after
    start, :attr:`metrics_port` is the bound port. :meth:`request_stop` is what SIGTERM does.
    """

    def __init__(self, settings: Settings, *, metrics_port: int | None = None) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.health = HealthState(
            liveness_window_s=max(
                30.0,
                3 * settings.batch_timeout_ms / 1000
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
        #: Held by the loop from "batch fetched" to "offsets handed to the committer".
        self._batch_lock = asyncio.Lock()
        self._committer: OffsetCommitter | None = None
        self._gauges: LagGauges | None = None
        #: What the last database signal said (None: nothing yet); changes are logged.
        self._database_state: bool | None = None
        #: A batch's transaction is being retried for a fault that makes this instance unready
        #: (a lock held elsewhere, a read-only server): until that batch commits, a probe that
        #: can connect does not make the instance ready again.
        self._is_batch_blocked = False

    def request_stop(self) -> None:
        """Stop fetching and shut down gracefully; a second call abandons the batch in hand."""
        if self._stop.is_set():
            self._abort.set()
            return
        _log.info("consumer.stopping", timeout_s=self.settings.shutdown_timeout_s)
        self.health.is_stopping = True
        self._stop.set()

    def on_retry(self, error: Exception, wait_s: float) -> None:
        """A retry was scheduled somewhere in this service (:mod:`consumer.retry`)."""
        operation = error.operation if isinstance(error, TransientError) else "unknown"
        self.metrics.retries.labels(operation=operation).inc()
        if operation == "database":
            self.metrics.db_retries.inc()
            if isinstance(error, TransientError) and error.is_unready:
                self._is_batch_blocked = True
                self._set_database_writable(False)
        elif operation == "dead_letter":
            self.health.can_dead_letter = False
        elif isinstance(error, BrokerUnavailable):
            self.health.is_broker_reachable = False
        self.health.tick()  # retrying is progress: the process must not be restarted for it

    async def run(self) -> int:
        """Consume until stopped; 0 after a clean shutdown, 2 for configuration, else 1."""
        server: HealthServer | None = None
        engine: AsyncEngine | None = None
        clients: list[AIOKafkaConsumer | AIOKafkaProducer] = []
        timers: list[asyncio.Task[None]] = []
        with observing_retries(self):
            try:
                server = await self._serve()
                _log.info(
                    "consumer.starting",
                    version=__version__,
                    group=self.settings.group_id,
                    topics=list(self.settings.source_topics),
                    database=self.settings.redacted_database_url,
                    metrics_port=self.metrics_port,
                )
                engine = create_engine(self.settings)
                await self._check_database(engine)  # a wrong password stops us here, at once
                timers.append(asyncio.create_task(self._check_database_forever(engine)))
                return await self._until_stopped(self._consume(engine, clients, timers))
            except ConfigurationError as exc:
                _log.critical("consumer.fatal", kind="configuration", error=str(exc))
                return 2
            except TransientError as exc:  # only with retry_max_attempts set
                _log.critical("consumer.fatal", kind="retries_exhausted", error=str(exc))
                return 1
            except Exception as exc:
                if (sqlstate := sqlstate_of(exc)) is not None:
                    # PostgreSQL refused a statement for good (a missing privilege or column):
                    # its SQLSTATE and message name the table. No traceback: SQLAlchemy's text
                    # of it carries the statement, and the driver's may quote its parameters.
                    _log.critical(
                        "consumer.fatal",
                        kind="database",
                        sqlstate=sqlstate,
                        error=describe_error(exc),
                    )
                else:
                    _log.critical("consumer.fatal", kind="bug", error=repr(exc), exc_info=True)
                return 1
            finally:
                self.health.is_stopping = True
                for timer in timers:
                    timer.cancel()
                await asyncio.gather(*timers, return_exceptions=True)
                if self._committer is not None:
                    await self._committer.close(timeout_s=_CLOSE_TIMEOUT_S)
                for client in clients:  # the consumer first: leaving hands partitions over
                    await _quietly(client.stop())
                if engine is not None:
                    await _quietly(engine.dispose())
                if server is not None:
                    await _quietly(server.close())
                _log.info("consumer.stopped")

    async def _until_stopped(self, work: Awaitable[int]) -> int:
        """Run ``work`` until it ends or a stop is requested; a batch in hand is finished."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and self._batch_lock.locked():
                abort = asyncio.create_task(self._abort.wait())
                await asyncio.wait(
                    {task, abort},
                    timeout=self.settings.shutdown_timeout_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                abort.cancel()
                if not task.done():
                    _log.error(
                        "consumer.shutdown_timeout",
                        timeout_s=self.settings.shutdown_timeout_s,
                        detail="the batch in hand was abandoned uncommitted; it is redelivered",
                    )
                    return 1
            if not task.done():
                # No batch in hand (starting, fetching or backing off): nothing to finish.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return 0
            return task.result()
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _consume(
        self,
        engine: AsyncEngine,
        clients: list[AIOKafkaConsumer | AIOKafkaProducer],
        timers: list[asyncio.Task[None]],
    ) -> int:
        settings = self.settings
        consumer = await self._start(self._new_consumer, "consumer")
        clients.append(consumer)
        producer = await self._start(lambda: new_dead_letter_producer(settings), "producer")
        clients.append(producer)
        assignment = Assignment(
            batch_lock=self._batch_lock,
            timeout_s=settings.shutdown_timeout_s,
            health=self.health,
            metrics=self.metrics,
            drain_commits=self._drain_commits,
            forget=self._forget,
        )
        gauges = self._gauges = LagGauges(
            consumer, self.metrics, self.health, assigned=lambda: assignment.assigned
        )
        self._committer = OffsetCommitter(
            settings, consumer, self.metrics, assignment.is_ours, gauges.committed_now
        )
        consumer.subscribe(list(settings.source_topics), listener=assignment)
        self.health.is_broker_reachable = True
        timers.append(asyncio.create_task(gauges.refresh_forever(settings.lag_refresh_interval_s)))
        processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
        writer = DeadLetterWriter(producer, topic=settings.topic_dlq, group_id=settings.group_id)
        held = HeldFieldsTimer(settings, engine, writer, self.metrics)
        releasing = asyncio.create_task(held.run_forever())
        timers.append(releasing)
        _log.info("consumer.started", group=settings.group_id)
        positions_at = time.monotonic()
        while not self._stop.is_set():
            if releasing.done():
                releasing.result()  # it only ends by raising what is not transient
            if time.monotonic() - positions_at >= _POSITIONS_INTERVAL_S:
                await self._hand_positions(consumer, assignment)
                positions_at = time.monotonic()
            batch = await self._fetch(consumer)
            if not batch:
                continue
            async with self._batch_lock:
                if assignment.is_rebalancing:
                    # Fetched for an assignment being revoked: the next one restarts every
                    # partition at its committed offset, so dropping these loses nothing.
                    continue
                await self._handle(processor, batch, consumer, assignment)
        await self._committer.drain()
        return 0

    async def _fetch(self, consumer: AIOKafkaConsumer) -> Batch:
        settings = self.settings
        async for attempt in retrying(settings):
            with attempt:
                try:
                    batch: Batch = await consumer.getmany(
                        timeout_ms=settings.batch_timeout_ms,
                        max_records=settings.batch_max_records,
                    )
                except FATAL_KAFKA_ERRORS as exc:
                    raise ConfigurationError(f"Kafka refused this client: {exc!r}") from exc
                except KafkaError as exc:
                    raise BrokerUnavailable(
                        f"fetching failed: {describe_error(exc)}", operation="fetch"
                    ) from exc
        self.health.tick()
        return batch

    async def _handle(
        self,
        processor: BatchProcessor,
        batch: Batch,
        consumer: AIOKafkaConsumer,
        assignment: Assignment,
    ) -> None:
        """Make ``batch`` durable and hand its offsets over; when it is full (a backlog) and
        more records are buffered already, take and handle those too, up to :data:`_IN_FLIGHT`
        batches in the database at once (each in lanes) and the next one decoding meanwhile,
        handed over in the order fetched. Returns with nothing in flight, so the caller's batch
        lock frees."""
        flight: collections.deque[_InFlight] = collections.deque()
        decoded = processor.decode(batch)
        try:
            while True:
                backlog = processor.is_full(decoded)
                flight.append(self._submit(processor, batch, decoded, backlog))
                if len(flight) >= _IN_FLIGHT:
                    await self._hand(flight.popleft())
                # Only a backlog is taken ahead; live traffic (smaller batches) is applied as
                # it comes, one batch at a time, as fetched.
                batch = await self._buffered(consumer, assignment) if backlog else {}
                if not batch:
                    break
                # Decoded in chunks: the batches in the database are served between them.
                decoded = await processor.decode_yielding(batch, every=_DECODE_CHUNK)
                while flight and flight[0].task.done():
                    await self._hand(flight.popleft())
            while flight:
                await self._hand(flight.popleft())
        except BaseException:
            # Nothing more of these batches is handed over: their records come again.
            for handling in flight:
                handling.task.cancel()
            await processor.abandon()
            await asyncio.gather(*(h.task for h in flight), return_exceptions=True)
            raise

    def _submit(
        self, processor: BatchProcessor, batch: Batch, decoded: Decoded, backlog: bool
    ) -> _InFlight:
        assert self._gauges is not None  # set by _consume before its loop starts
        for tp, records in batch.items():
            if records:
                self._gauges.fetched(tp, records[0].timestamp)
        task = processor.submit(decoded, in_lanes=backlog)
        return _InFlight(task, decoded.result.records, time.monotonic())

    async def _hand(self, handling: _InFlight) -> None:
        """Wait for a batch in flight to be durable, then hand its offsets to the committer."""
        assert self._committer is not None  # set by _consume before its loop starts
        result = await handling.task
        elapsed = time.monotonic() - handling.started
        self.health.tick()
        self.health.can_dead_letter = True
        if result.wrote_database:
            self._is_batch_blocked = False
            self._set_database_writable(True)
        metrics = self.metrics
        metrics.batch_size.observe(handling.size)
        metrics.batch_duration.observe(elapsed)
        metrics.count_outcomes(result.outcomes)
        for reason, count in result.dead_letter_reasons.items():
            metrics.dead_letters.labels(reason=reason).inc(count)
        metrics.observe_latencies(result.applied_occurred_at)
        self._committer.hand(result.commit_offsets)
        _log.debug(
            "batch.handled",
            records=handling.size,
            dead_letters=result.dead_letters,
            seconds=elapsed,
        )

    async def _buffered(self, consumer: AIOKafkaConsumer, assignment: Assignment) -> Batch:
        """The next batch if its records are buffered already, never waiting for the broker
        (empty when there are none, or when stopping or rebalancing)."""
        if self._stop.is_set() or assignment.is_rebalancing:
            return {}
        try:
            # Bounded: while a rebalance starts, aiokafka's getmany waits for the next
            # assignment, which waits for this batch lock.
            return await asyncio.wait_for(
                consumer.getmany(timeout_ms=0, max_records=self.settings.batch_max_records),
                _BUFFERED_FETCH_S,
            )
        except (KafkaError, TimeoutError):
            return {}  # the next regular fetch meets it again, and retries or stops

    async def _hand_positions(self, consumer: AIOKafkaConsumer, assignment: Assignment) -> None:
        """Commit positions that passed records no batch returns (see the committer)."""
        assert self._committer is not None
        if assignment.is_rebalancing:
            return  # what was fetched is being dropped: the positions may be past unhandled records
        tps = [tp for tp in sorted(assignment.assigned) if assignment.is_ours(tp)]
        # A known position is returned at once; one being reset (after a rebalance, the broker
        # away) would wait for the broker: skipped, never stalling the loop.
        found = await asyncio.gather(
            *(asyncio.wait_for(consumer.position(tp), _POSITION_WAIT_S) for tp in tps),
            return_exceptions=True,
        )
        positions = {tp: at for tp, at in zip(tps, found, strict=True) if isinstance(at, int)}
        self._committer.hand_positions(positions)

    async def _drain_commits(self) -> None:
        if self._committer is not None:
            await self._committer.drain()

    def _forget(self, partitions: set[TopicPartition]) -> None:
        if self._committer is not None:
            self._committer.forget(partitions)
        if self._gauges is not None:
            self._gauges.forget(partitions)

    def _set_database_writable(self, ok: bool, *, reason: str | None = None) -> None:
        if ok is not self._database_state:  # log changes only (the first state included)
            if ok:
                _log.info("database.available")
            else:
                _log.warning("database.unavailable", error=reason)
        self._database_state = ok
        self.health.is_database_writable = ok

    async def _check_database(self, engine: AsyncEngine) -> None:
        writable = await is_database_writable(engine, timeout_s=_PROBE_TIMEOUT_S)
        if writable and self._is_batch_blocked:
            return  # the probe reaches the server, the blocked batch does not: still not ready
        self._set_database_writable(writable)

    async def _check_database_forever(self, engine: AsyncEngine) -> None:
        interval = min(self.settings.lag_refresh_interval_s, _DB_CHECK_MAX_INTERVAL_S)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._check_database(engine)
            except ConfigurationError as exc:
                # Only at start-up does a refusal stop the process. Later (a password rotated,
                # the database dropped or still being created) it means not ready, said once,
                # and probed again; it used to end this loop silently, /readyz left as it was.
                self._set_database_writable(False, reason=str(exc))

    async def _serve(self) -> HealthServer | None:
        if not self._serve_http:
            return None
        server = HealthServer(self.health, self._render_metrics, port=self._requested_port)
        try:
            self.metrics_port = await server.start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on port {self._requested_port}: {exc.strerror}; "
                "set ROUTING_METRICS_PORT (0 turns the endpoint off)"
            ) from exc
        return server

    def _new_consumer(self) -> AIOKafkaConsumer:
        settings = self.settings
        return AIOKafkaConsumer(
            **client_options(settings),
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=ISOLATION_LEVEL,
            max_poll_records=settings.batch_max_records,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=min(3000, settings.kafka_session_timeout_ms // 3),
            metadata_max_age_ms=_METADATA_MAX_AGE_MS,
        )

    async def _start(self, make: Callable[[], _T], what: str) -> _T:
        """A started client, retried until the broker answers (a fresh client per attempt)."""
        async for attempt in retrying(self.settings):
            with attempt:
                client: Any = make()
                try:
                    await client.start()
                except FATAL_KAFKA_ERRORS as exc:
                    await _quietly(client.stop())
                    raise ConfigurationError(f"Kafka refused the {what}: {exc!r}") from exc
                except (KafkaError, OSError) as exc:
                    await _quietly(client.stop())
                    # aiokafka reports a refused login or certificate like a broker that is
                    # down: ask once which it was, so wrong credentials stop the process.
                    cause = await find_permanent_connect_error(self.settings)
                    if cause is not None:
                        raise ConfigurationError(f"Kafka refused the {what}: {cause!r}") from cause
                    raise BrokerUnavailable(
                        f"Kafka unavailable for the {what}: {describe_error(exc)}",
                        operation="connect",
                    ) from exc
        return client  # type: ignore[no-any-return]

    def _render_metrics(self) -> tuple[bytes, str]:
        return self.metrics.render(), CONTENT_TYPE


async def _quietly(closing: Awaitable[Any]) -> None:
    try:
        await asyncio.wait_for(closing, _CLOSE_TIMEOUT_S)
    except asyncio.CancelledError:
        # aiokafka's consumer.stop() lets the cancellation of its own fetch task escape when the
        # broker is away; it is not ours (then re-raise), and the other clients still close.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        _log.warning("consumer.close_failed", error="CancelledError")
    except Exception as exc:  # closing is best effort; the process is exiting anyway
        _log.warning("consumer.close_failed", error=describe_error(exc))


async def run_service(settings: Settings, *, metrics_port: int | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process exit code (module doc)."""
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
