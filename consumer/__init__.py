"""routing-persistence: the idempotent Kafka to PostgreSQL consumer of the routing events."""

__all__ = ["__version__"]

__version__ = "0.1.0"
