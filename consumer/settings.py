"""Configuration: one pydantic-settings model, built once at the edge (the CLI) and passed down.

Every variable of docs/contract.md §4 is a field here under the ``ROUTING_`` prefix; the rest are
tuning knobs with production defaults. Secrets are ``SecretStr`` and the database URL is redacted
whenever it is shown, so neither ever reaches a log line, a metric label or an error message.
"""

from __future__ import annotations

import enum
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_URL", "MissingRowPolicy", "Settings", "parse_duration", "redact_url"]

DEFAULT_DATABASE_URL = "postgresql://postgres@localhost:5432/routing"

_ACCEPTED_SCHEMES = ("postgresql", "postgresql+asyncpg", "postgres")

# libpq's TLS parameters, which asyncpg reads from a DSN but SQLAlchemy's asyncpg dialect would pass
# on as unknown keyword arguments (TypeError): see Settings.async_database_url.
_LIBPQ_TLS_PARAMS = frozenset(
    {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "sslnegotiation"}
)


class MissingRowPolicy(enum.StrEnum):
    """What a snapshot or cost for a ``requestId`` without an ``"ExecutionRecord"`` row does."""

    #: Held in the service's own table until the row appears (docs/contract.md §3).
    PARK = "park"
    #: The service creates the row with its key columns (it is the row's creator).
    CREATE = "create"


_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_SHORT_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_TIMEDELTA: Final = TypeAdapter(timedelta)


def parse_duration(value: object) -> timedelta:
    """A positive duration from seconds (``604800``), ``7d``/``12h``/``30m``/``45s``/``1w``,
    or ISO 8601 (``P7D``, ``PT1H30M``). Raises ``ValueError`` naming the accepted forms."""
    parsed: timedelta | None
    if isinstance(value, timedelta):
        parsed = value
    else:
        short = _SHORT_DURATION.fullmatch(value) if isinstance(value, str) else None
        try:
            if isinstance(value, bool):
                parsed = None
            elif short is not None:
                unit = _DURATION_UNITS[short.group(2).lower() or "s"]
                parsed = timedelta(seconds=float(short.group(1)) * unit)
            elif isinstance(value, str):
                parsed = _TIMEDELTA.validate_strings(value.strip())
            else:
                parsed = _TIMEDELTA.validate_python(value)
        except (ValidationError, OverflowError):
            parsed = None
        if parsed is None:
            raise ValueError(
                f"{value!r} is not a duration: give seconds (604800), a number and a unit "
                "(7d, 12h, 30m, 45s, 1w) or ISO 8601 (P7D, PT1H30M)"
            )
    if parsed <= timedelta(0):
        raise ValueError(f"the duration must be positive, got {parsed}")
    return parsed


def _with_query(url: str, query: list[tuple[str, str]]) -> str:
    return urlunsplit(urlsplit(url)._replace(query=urlencode(query)))


def _is_secret_parameter(name: str) -> bool:
    # asyncpg reads "password" and "sslpassword" from the query; any other spelling that says
    # "password" is masked too, whatever the driver makes of it.
    return "password" in unquote_plus(name).lower()


def redact_url(url: str) -> str:
    """Return ``url`` with every password replaced by ``***`` (safe to log).

    Masked: the userinfo password (``postgresql://u:***@h/db``) and the value of every query
    parameter whose name says ``password`` (``?password=***``, ``?sslpassword=***``), the forms
    asyncpg accepts. The rest is kept byte for byte. A URL that cannot be parsed is not shown at
    all.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    pieces = []
    for piece in parts.query.split("&"):
        name, equals, _ = piece.partition("=")
        pieces.append(f"{name}=***" if equals and _is_secret_parameter(name) else piece)
    query = "&".join(pieces)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class Settings(BaseSettings):
    """The service's whole configuration (env prefix ``ROUTING_``; CLI flags override).

    Raises ``pydantic.ValidationError`` at construction when a value is malformed, naming the
    variable; the CLI turns that into exit code 2 with the message (never the secret values).
    """

    model_config = SettingsConfigDict(
        env_prefix="ROUTING_",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    # --- contract §4 -------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "localhost:9092"
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    group_id: str = Field(default="routing-persistence", min_length=1)
    topic_snapshots: str = Field(default="routing.snapshots", min_length=1)
    topic_costs: str = Field(default="routing.costs", min_length=1)
    topic_policies: str = Field(default="routing.tenant-policies", min_length=1)
    topic_dlq: str = Field(default="routing.dlq", min_length=1)
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    #: A snapshot or cost whose ``"ExecutionRecord"`` row does not exist yet: held until the
    #: row appears (``park``) or the row is created with its key columns (``create``).
    missing_row_policy: MissingRowPolicy = MissingRowPolicy.PARK
    #: A held field whose row has not appeared after this long is dead-lettered as
    #: ``row_missing`` (:func:`parse_duration`: ``604800``, ``7d``, ``P7D``).
    missing_row_ttl: timedelta = timedelta(days=7)

    # --- tuning (not in the contract; defaults suit one pod with 1 CPU) ---------------------
    kafka_client_id: str = "routing-persistence"
    #: A member that stops heartbeating (a crashed pod) loses its partitions after this long.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    #: An offset commit that has not returned after this long (broker unreachable, coordinator
    #: moving) is abandoned and tried again with backoff, merged with what came meanwhile.
    kafka_commit_timeout_s: float = Field(default=30.0, gt=0)
    #: Upper bound of records taken by one ``getmany()``: bounds memory and batch latency.
    batch_max_records: int = Field(default=2000, ge=1, le=100_000)
    #: How long one ``getmany()`` waits for records before handing back a partial batch.
    batch_timeout_ms: int = Field(default=200, ge=1, le=60_000)
    #: Records larger than this are dead-lettered as ``payload_too_large`` (1 MiB default).
    max_payload_bytes: int = Field(default=1_048_576, ge=1024)
    #: 0 means retry transient faults forever (the contract's default).
    retry_max_attempts: int = Field(default=0, ge=0)
    retry_initial_delay_s: float = Field(default=0.2, gt=0)
    retry_max_delay_s: float = Field(default=30.0, gt=0)
    db_pool_size: int = Field(default=4, ge=1, le=100)
    #: A full batch (a backlog) is applied as this many transactions at once, on as many
    #: connections, its events split by row key (no two transactions share a row, so they never
    #: wait on each other): Python builds one's statements while PostgreSQL runs another's. A
    #: smaller batch (live traffic) is one transaction. Capped at ``db_pool_size - 1``
    #: (:attr:`lanes`): one connection stays for the held-field release.
    db_lanes: int = Field(default=3, ge=1, le=32)
    db_statement_timeout_ms: int = Field(default=60_000, ge=0)
    #: A statement waits at most this long for a row or table lock held by another session
    #: (a long transaction, another team's migration), then gives up and the batch is retried
    #: with backoff, the instance not ready meanwhile. Below the statement timeout, so a lock
    #: wait is told apart from a slow statement. Unset: 10 s, or half the statement timeout
    #: when that is shorter (see :attr:`lock_timeout_ms`).
    db_lock_timeout_ms: int | None = Field(default=None, ge=1)
    #: ``migrate``: each DDL statement waits at most this long for its table lock, so it never
    #: queues traffic behind it for longer; then it backs off and tries again.
    migrate_lock_timeout_ms: int = Field(default=2000, ge=1, le=600_000)
    #: ``migrate``: how many lock attempts before giving up (exit 1, nothing half-applied).
    migrate_max_attempts: int = Field(default=20, ge=1)
    #: After SIGTERM, how long the batch in hand may take before the process gives up on it
    #: (uncommitted, so it is redelivered) and exits.
    shutdown_timeout_s: float = Field(default=25.0, gt=0)
    lag_refresh_interval_s: float = Field(default=10.0, gt=0)
    #: Held fields: how often the service looks for rows that appeared (and for expired ones).
    held_release_interval_s: float = Field(default=1.0, gt=0, le=300)
    #: Held fields: at most this many held rows are looked at per step of a cycle (the newest,
    #: the next of the sweep over all of them, the expired), which bounds each cycle's cost.
    held_chunk: int = Field(default=5000, ge=1, le=100_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console", "auto"] = "auto"

    @property
    def lanes(self) -> int:
        """How many transactions apply one batch at once (``db_lanes``, within the pool)."""
        return max(1, min(self.db_lanes, self.db_pool_size - 1))

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in _ACCEPTED_SCHEMES:
            # Only the scheme is echoed: the rest of the URL may hold a password.
            raise ValueError(
                f"scheme {scheme!r} is not supported; use postgresql:// or postgresql+asyncpg://"
            )
        return value

    @field_validator("missing_row_ttl", mode="before")
    @classmethod
    def _parse_ttl(cls, value: object) -> timedelta:
        return parse_duration(value)

    @model_validator(mode="after")
    def _check_timeouts(self) -> Settings:
        statement, lock = self.db_statement_timeout_ms, self.db_lock_timeout_ms
        if statement and lock is not None and lock >= statement:
            raise ValueError(
                f"ROUTING_DB_LOCK_TIMEOUT_MS ({lock}) must be below "
                f"ROUTING_DB_STATEMENT_TIMEOUT_MS ({statement})"
            )
        return self

    @property
    def lock_timeout_ms(self) -> int:
        """The sessions' ``lock_timeout``: the setting, else 10 s or half the statement timeout."""
        if self.db_lock_timeout_ms is not None:
            return self.db_lock_timeout_ms
        statement = self.db_statement_timeout_ms
        return min(10_000, max(1, statement // 2)) if statement else 10_000

    @model_validator(mode="after")
    def _check_sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism is None:
                raise ValueError("ROUTING_KAFKA_SASL_MECHANISM is required with SASL_* protocols")
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ValueError(
                    "ROUTING_KAFKA_SASL_USERNAME and ROUTING_KAFKA_SASL_PASSWORD are required "
                    "with SASL_* protocols"
                )
        return self

    @property
    def async_database_url(self) -> str:
        """The database URL for SQLAlchemy's asyncpg dialect (contains the password: never log).

        libpq TLS parameters (``sslmode=verify-full&sslrootcert=/ca.pem``) are taken out, because
        the dialect would hand them to ``asyncpg.connect`` as unknown keywords; ``sslmode`` stays
        as the dialect's ``ssl=<mode>``, so TLS is never silently dropped (without the CA file a
        verifying mode fails closed). Pass :attr:`database_connect_args` too for the CA file.
        """
        parts = urlsplit(self.database_url.get_secret_value())
        query = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "sslmode":
                query.append(("ssl", value))
            elif name not in _LIBPQ_TLS_PARAMS:
                query.append((name, value))
        return _with_query(urlunsplit(parts._replace(scheme="postgresql+asyncpg")), query)

    @property
    def database_connect_args(self) -> dict[str, Any]:
        """``connect_args`` for ``create_async_engine(self.async_database_url, ...)``.

        When the URL carries libpq TLS parameters, asyncpg gets the whole libpq-style DSN and reads
        ``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey`` itself (explicit keywords from the
        URL win and are the same values). Holds the password: never log.
        """
        names = {
            name for name, _ in parse_qsl(urlsplit(self.database_url.get_secret_value()).query)
        }
        if names & _LIBPQ_TLS_PARAMS:
            return {"dsn": self.plain_database_url}
        return {}

    @property
    def plain_database_url(self) -> str:
        """The database URL as libpq/asyncpg accept it (contains the password: never log).

        SQLAlchemy's ``ssl=<mode>`` spelling is turned into libpq's ``sslmode=<mode>``.
        """
        parts = urlsplit(self.database_url.get_secret_value())
        query = [
            ("sslmode" if name == "ssl" else name, value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        return _with_query(urlunsplit(parts._replace(scheme="postgresql")), query)

    @property
    def redacted_database_url(self) -> str:
        """The database URL with its password masked, for logs and error messages."""
        return redact_url(self.database_url.get_secret_value())

    @property
    def source_topics(self) -> tuple[str, str, str]:
        """The three topics the consumer reads: snapshots, costs, policies."""
        return (self.topic_snapshots, self.topic_costs, self.topic_policies)
