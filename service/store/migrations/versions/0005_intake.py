"""intake: received files (evidence), the review queue, applied directory changes

Issue 11: submissions that arrive by e-mail or upload keep their file and parsed rows
(``intake_evidence``, unique per campaign by the file's SHA-256 so the same file twice
records once); what cannot be matched safely waits in ``intake_review``; a confirmed
liaison change is kept with its before/after in ``directory_changes``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "intake_evidence",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=True),
        sa.Column("filename", sa.Text(), server_default="", nullable=False),
        sa.Column("sender", sa.String(256), nullable=True),
        sa.Column("received_at", _AT, nullable=False),
        sa.Column("stored_path", sa.Text(), server_default="", nullable=False),
        sa.Column("unit_id", sa.String(64), nullable=True),
        sa.Column("obligation", sa.String(64), nullable=True),
        sa.Column("period", sa.String(32), nullable=True),
        sa.Column("rows", sa.JSON(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("submission_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake_evidence")),
        sa.UniqueConstraint("campaign", "sha256", name="uq_intake_evidence_sha256"),
    )
    op.create_index("ix_intake_evidence_message", "intake_evidence", ["campaign", "message_id"])
    op.create_index(
        "ix_intake_evidence_occurrence", "intake_evidence", ["campaign", "obligation", "period"]
    )
    op.create_table(
        "intake_review",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("evidence_id", _ID, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("proposal", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(12), server_default="open", nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("decided_at", _AT, nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decision", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake_review")),
    )
    op.create_index("ix_intake_review_status", "intake_review", ["campaign", "status"])
    op.create_table(
        "directory_changes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("review_id", _ID, nullable=True),
        sa.Column("unit_id", sa.String(64), nullable=False),
        sa.Column("person_id", sa.String(64), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=False),
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("applied_at", _AT, nullable=False),
        sa.Column("applied_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_changes")),
    )


def downgrade() -> None:
    op.drop_table("directory_changes")
    op.drop_index("ix_intake_review_status", table_name="intake_review")
    op.drop_table("intake_review")
    op.drop_index("ix_intake_evidence_occurrence", table_name="intake_evidence")
    op.drop_index("ix_intake_evidence_message", table_name="intake_evidence")
    op.drop_table("intake_evidence")
