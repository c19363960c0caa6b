"""Liveness, readiness, and the HTTP endpoint serving them and the metrics (docs/contract.md §6).

* ``GET /healthz``: 200 while the consume loop has ticked (fetched, or retried a fault) within
  :attr:`HealthState.liveness_window_s`; 503 when it is stuck. A database outage does not make
  the process unhealthy (restarting would not help): the retries keep ticking.
* ``GET /readyz``: 200 only while the instance is a member of its group (with partitions, or
  joined with none), the broker answers and the database is writable; 503 otherwise.
* ``GET /metrics``: the Prometheus text format of :class:`~consumer.service.metrics.ServiceMetrics`.

The server is a deliberately tiny HTTP/1.1 responder on :func:`asyncio.start_server` (one request
per connection, ``Connection: close``): probes and scrapers need nothing more, and it adds no
dependency or thread to the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer.logs import get_logger

__all__ = ["HealthServer", "HealthState"]

_log = get_logger(__name__)

_MAX_REQUEST_BYTES = 8192
_REQUEST_TIMEOUT_S = 5.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


@dataclass
class HealthState:
    """What the probes report; the service updates it, the HTTP handler only reads it.

    ``clock`` is monotonic seconds (injectable for tests of the timing rules).
    """

    liveness_window_s: float
    clock: Callable[[], float] = time.monotonic
    #: A member of the group right now (partitions assigned, possibly none).
    is_in_group: bool = False
    #: The last database signal (a batch committed, a retry, the periodic check) said writable.
    is_database_writable: bool = False
    #: The broker answered the last metadata/offsets request.
    is_broker_reachable: bool = False
    #: The last dead letters were acknowledged (false while writing them is being retried).
    can_dead_letter: bool = True
    #: Set once shutdown starts: not ready any more, still alive until the process exits.
    is_stopping: bool = False
    last_tick: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.last_tick = self.clock()

    def tick(self) -> None:
        """Record that the consume loop made progress (a fetch returned or a retry ran)."""
        self.last_tick = self.clock()

    def is_alive(self) -> bool:
        """True while the loop ticked within the liveness window."""
        return self.clock() - self.last_tick <= self.liveness_window_s

    def is_ready(self) -> bool:
        """True while in the group, the broker answers, the database is writable and dead
        letters can be written."""
        return (
            not self.is_stopping
            and self.is_in_group
            and self.is_broker_reachable
            and self.is_database_writable
            and self.can_dead_letter
        )

    def describe(self) -> dict[str, bool | float]:
        """The state as a small JSON-able dict (the probes' response body)."""
        return {
            "alive": self.is_alive(),
            "ready": self.is_ready(),
            "in_group": self.is_in_group,
            "database_writable": self.is_database_writable,
            "broker_reachable": self.is_broker_reachable,
            "can_dead_letter": self.can_dead_letter,
            "stopping": self.is_stopping,
            "seconds_since_tick": round(self.clock() - self.last_tick, 3),
        }


class HealthServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (``port=0``: any free).

    ``render_metrics`` returns ``(body, content_type)`` of a scrape; it must be cheap (it runs on
    the event loop) and is called only for ``/metrics``.
    """

    def __init__(
        self,
        state: HealthState,
        render_metrics: Callable[[], tuple[bytes, str]],
        *,
        host: str = "0.0.0.0",  # noqa: S104 - probes and scrapers come from outside the pod
        port: int,
    ) -> None:
        self._state = state
        self._render_metrics = render_metrics
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when constructed with ``port=0``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("HealthServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> int:
        """Bind and start serving; returns the bound port. Raises ``OSError`` if it cannot bind."""
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, reuse_address=True, limit=_MAX_REQUEST_BYTES
        )
        return self.port

    async def close(self) -> None:
        """Stop accepting connections and close the listening socket."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return  # a port scan, a half-open probe or an oversized request: just close
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                await self._respond(writer, 400, b"bad request\n", "text/plain")
                return
            method, target, _version = parts
            path = target.split("?", 1)[0]
            status, body, content_type = self._route(path)
            if method not in ("GET", "HEAD"):
                status, body, content_type = 405, b"method not allowed\n", "text/plain"
            await self._respond(writer, status, body, content_type, head_only=method == "HEAD")
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        except Exception:  # a bug here must not take the service down with it
            _log.exception("health.request_failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _route(self, path: str) -> tuple[int, bytes, str]:
        if path == "/metrics":
            body, content_type = self._render_metrics()
            return 200, body, content_type
        if path in ("/healthz", "/readyz"):
            ok = self._state.is_alive() if path == "/healthz" else self._state.is_ready()
            body = json.dumps(self._state.describe()).encode() + b"\n"
            return (200 if ok else 503), body, "application/json"
        return 404, b"not found\n", "text/plain"

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str,
        *,
        head_only: bool = False,
    ) -> None:
        headers = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(headers.encode("latin-1") + (b"" if head_only else body))
        await writer.drain()
