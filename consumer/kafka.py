"""Kafka client construction from :class:`~consumer.settings.Settings` (one place for security)."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from consumer.settings import Settings

__all__ = ["client_options"]


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
