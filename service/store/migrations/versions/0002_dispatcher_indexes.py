"""indexes for the dispatcher's per-batch look-ups

The dispatcher, once per claimed batch, counts each recipient's SMS sent today
(``Outbox.sms_sent_since``) and re-reads the batch's units' submissions
(``Ledger.counts_for``). Neither query could use an index: the first scanned every
``sent`` message (at 10,000 units late in the campaign, 400,000 rows per batch: most of a
replay's time), the second every submission of the campaign (1.36 M rows nationally).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 09:35:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_recipient_sent", "messages", ["recipient_id", "sent_at"], unique=False
    )
    op.create_index("ix_submissions_unit", "submissions", ["campaign", "unit_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_submissions_unit", table_name="submissions")
    op.drop_index("ix_messages_recipient_sent", table_name="messages")
