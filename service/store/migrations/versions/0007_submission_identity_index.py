"""index for idempotent imports: one submission's identity

An import classifies each row as new, already recorded or conflicting by looking up
(campaign, unit, obligation, period, submitted_at). Without this index the lookup used
``ix_submissions_occurrence`` and then scanned every submission of that occurrence: a
re-import of a file with many rows per occurrence grew quadratically.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-02 19:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_submissions_identity",
        "submissions",
        ["campaign", "unit_id", "obligation", "period", "submitted_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_submissions_identity", table_name="submissions")
