"""What happened to a record: the one vocabulary of metrics, summaries and logs (CONTRACT §6).

``held`` extends the contract's list: a snapshot or cost whose ``"ExecutionRecord"`` row does
not exist yet, kept in the service's own table until the row appears (docs/contract.md §3).
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["UNKNOWN_TYPE", "Outcome"]


class Outcome(enum.StrEnum):
    """The ``outcome`` label of ``routing_consumer_events_total``, and a dry run's ``valid``."""

    APPLIED = "applied"  # its payload is now the stored value of its field
    STALE = "stale"  # the stored version was the same or newer: nothing written
    DEAD_LETTERED = "dead_lettered"  # on the dead-letter topic, acknowledged
    IGNORED = "ignored"  # a tombstone: nothing to apply
    HELD = "held"  # its row does not exist yet: held until it does (committed, not applied)
    VALID = "valid"  # dry run only: valid, would be offered to the database

    @classmethod
    def counted(cls) -> tuple[Outcome, ...]:
        """The outcomes a real (not dry) run reports."""
        return (cls.APPLIED, cls.STALE, cls.DEAD_LETTERED, cls.IGNORED, cls.HELD)


#: The event-type label of a record whose type is not known (a tombstone, undecodable bytes).
UNKNOWN_TYPE: Final = "unknown"
