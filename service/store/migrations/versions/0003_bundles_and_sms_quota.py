"""bundled messages carry their items; the daily SMS cap is a reservation per phone

A message is now a bundle of items (obligation × period × unit × step) for one recipient,
channel and moment: ``messages.items`` holds them (JSON) so that the dispatcher re-checks
each one at send time. ``sms_quota`` counts SMS reserved per phone number and local day
with a conditional upsert, so the cap holds across replicas and for people sharing a
mobile.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("items", sa.JSON(), nullable=True))
    op.create_table(
        "sms_quota",
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("campaign", "phone", "day", name="pk_sms_quota"),
    )


def downgrade() -> None:
    op.drop_table("sms_quota")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("items")
