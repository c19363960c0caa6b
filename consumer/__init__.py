"""routing-persistence: the idempotent Kafka → PostgreSQL consumer of the routing engine's events."""

__all__ = ["__version__"]

__version__ = "0.1.0"
