"""dashboard tally index: active submissions per occurrence, covering count and moment

The dashboard counts, per open occurrence, the units whose active submissions reach the
quota minimum (in all and by the due moment): one ordered pass per occurrence grouped by
unit. Through ``ix_submissions_occurrence`` each branch fetched every row from the heap
and, with the planner underestimating an occurrence's rows (obligation and period were
taken as independent), hashed them by unit and spilled to disk. This partial index of the
active rows carries ``count`` and ``submitted_at`` (INCLUDE, PostgreSQL): an index-only
scan in unit order feeds a streaming GroupAggregate. The extended statistics tell the
planner how many rows one (campaign, obligation, period) really has.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 02:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_submissions_tally",
        "submissions",
        ["campaign", "obligation", "period", "unit_id"],
        unique=False,
        postgresql_include=["count", "submitted_at"],
        postgresql_where=sa.text("retracted_at IS NULL"),
        sqlite_where=sa.text("retracted_at IS NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE STATISTICS IF NOT EXISTS st_submissions_occurrence (dependencies, ndistinct)"
            " ON campaign, obligation, period FROM submissions"
        )
        op.execute("ANALYZE submissions")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_submissions_occurrence")
    op.drop_index("ix_submissions_tally", table_name="submissions")
