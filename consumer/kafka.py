"""Kafka clients from :class:`~consumer.settings.Settings`: one place for security and reading.

:func:`client_options` holds what every client shares (bootstrap servers, TLS, SASL);
:data:`ISOLATION_LEVEL` is how every consumer of this service reads; :func:`describe_partitions`
lists partitions without ever creating a topic (raises
:class:`~consumer.errors.MissingTopicsError`); :func:`find_permanent_connect_error` tells a
refused login or certificate from a broker that is merely down.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Sequence
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import TopicPartition

from consumer.errors import MissingTopicsError
from consumer.settings import Settings

__all__ = [
    "FATAL_KAFKA_ERRORS",
    "ISOLATION_LEVEL",
    "client_options",
    "describe_partitions",
    "find_permanent_connect_error",
    "is_record_too_large",
    "is_transient_kafka_error",
    "partition_names",
]

#: Every consumer of this service (``run``, ``replay``, ``dlq redrive``, ``lag``) reads only
#: records of committed transactions, and sees end offsets at the last stable offset.
ISOLATION_LEVEL: Final = "read_committed"


async def describe_partitions(
    admin: AIOKafkaAdminClient, topics: Sequence[str]
) -> list[TopicPartition]:
    """Every partition of ``topics``, sorted; raises :class:`MissingTopicsError` naming any missing.

    Asks for the metadata of all topics: asking for named ones would create them on a broker
    with ``auto.create.topics.enable``, and looking must never create anything.
    """
    described = [t for t in await admin.describe_topics() if t["topic"] in topics]
    missing = sorted(set(topics) - {t["topic"] for t in described if t["error_code"] == 0})
    if missing:
        raise MissingTopicsError(f"topic(s) not found on the broker: {', '.join(missing)}")
    return sorted(
        TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
    )


#: Kafka errors no retry can fix: a wrong credential or a missing ACL.
FATAL_KAFKA_ERRORS: Final = (
    AuthenticationFailedError,
    GroupAuthorizationFailedError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)


def is_record_too_large(exc: BaseException) -> bool:
    """True when the producer or the broker refused a record for its size (permanent)."""
    return isinstance(exc, (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError))


def is_transient_kafka_error(exc: BaseException) -> bool:
    """True when sending again later can succeed (broker down, leader moving, timeout)."""
    if isinstance(exc, KafkaTimeoutError):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, OSError)


def partition_names(tps: Iterable[TopicPartition]) -> list[str]:
    """``topic:partition`` of each, sorted: how logs name partitions."""
    return sorted(f"{tp.topic}:{tp.partition}" for tp in tps)


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client this service creates.

    Covers bootstrap servers, client id, TLS (CA file) and SASL (PLAIN or SCRAM). The returned
    dict holds the SASL password: pass it to aiokafka, never log it.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        options["ssl_context"] = create_ssl_context(cafile=cafile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # enforced by Settings' validator
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


#: Errors of one bootstrap connection that no retry can fix: wrong credentials, a server
#: certificate the configured CA does not sign (or for another host).
_PERMANENT_CONNECT_ERRORS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    ssl.SSLCertVerificationError,
)


async def find_permanent_connect_error(
    settings: Settings, *, timeout_s: float = 10.0
) -> BaseException | None:
    """Why the bootstrap servers refuse this client, when no retry can fix it; else ``None``.

    aiokafka's ``start()`` reports a refused SASL login or a failed TLS verification only as
    ``KafkaConnectionError("Unable to bootstrap ...")``, the same as a broker that is down (which
    is transient and retried). Call this after such a failure: it connects once to each bootstrap
    server exactly as the clients do and returns the first SASL authentication or certificate
    verification error, so the caller can stop with a clear message instead of retrying forever.
    The error's text never contains the password (the broker's message names the mechanism).
    """
    options = client_options(settings)
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    client_id=options["client_id"],
                    ssl_context=options.get("ssl_context"),
                    security_protocol=options["security_protocol"],
                    sasl_mechanism=options.get("sasl_mechanism") or "PLAIN",
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"),
                ),
                timeout_s,
            )
        except _PERMANENT_CONNECT_ERRORS as exc:
            return exc
        except (KafkaError, OSError, TimeoutError, ValueError):
            continue  # down or unreachable: transient, the caller retries
        conn.close()
    return None
