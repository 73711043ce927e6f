"""index messages by recipient for the daily SMS cap

The dispatcher counts each recipient's SMS sent today (``Outbox.sms_sent_since``) once per
batch. Without this index the query scanned every ``sent`` row: at 10,000 units late in
the campaign (400,000 messages) SQLite spent most of a replay's time there.

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


def downgrade() -> None:
    op.drop_index("ix_messages_recipient_sent", table_name="messages")
