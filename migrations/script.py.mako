"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Online safety: one table per revision, nullable columns without defaults (no table rewrite),
set_lock_timeout() first. Downgrade removes exactly what upgrade added.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
${imports if imports else ""}
from migrations import set_lock_timeout

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    set_lock_timeout()
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    set_lock_timeout()
    ${downgrades if downgrades else "pass"}
