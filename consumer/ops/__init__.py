"""The operator commands: ``migrate``, ``lag``, ``replay``, ``dlq redrive``."""
