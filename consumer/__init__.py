"""routing-persistence: the idempotent Kafka to PostgreSQL consumer of the routing engine's events.

The contract it keeps is ``docs/contract.md``; the command line is :mod:`consumer.cli`.
``__version__`` is the installed distribution's version, read from its package metadata.
"""

from importlib.metadata import version

__all__ = ["__version__"]

__version__: str = version("routing-persistence")
