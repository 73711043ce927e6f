"""Table definitions (SQLAlchemy Core). The schema itself is created by migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes only; stored as UTC. SQLite would silently drop the offset."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

submissions = sa.Table(
    "submissions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("campaign", sa.String(64), nullable=False),
    sa.Column("unit_id", sa.String(64), nullable=False),
    sa.Column("obligation", sa.String(64), nullable=False),
    sa.Column("period", sa.String(32), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("submitted_at", UtcDateTime, nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("recorded_by", sa.String(128), nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("retracted_at", UtcDateTime, nullable=True),
    sa.Column("retracted_by", sa.String(128), nullable=True),
    sa.Column("retract_reason", sa.Text, nullable=True),
    sa.CheckConstraint("count > 0", name="count_positive"),
    sa.Index("ix_submissions_occurrence", "campaign", "obligation", "period", "unit_id"),
    sa.Index("ix_submissions_unit", "campaign", "unit_id"),  # the dispatcher's re-check
    # An import's "already recorded?" look-up (migration 0007).
    sa.Index(
        "ix_submissions_identity", "campaign", "unit_id", "obligation", "period", "submitted_at"
    ),
    # The dashboard's per-occurrence tallies read only this index (migration 0008).
    sa.Index(
        "ix_submissions_tally",
        "campaign",
        "obligation",
        "period",
        "unit_id",
        postgresql_include=["count", "submitted_at"],
        postgresql_where=sa.text("retracted_at IS NULL"),
        sqlite_where=sa.text("retracted_at IS NULL"),
    ),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("campaign", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(128), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("idem_key", sa.String(512), nullable=False, unique=True),
    sa.Column("campaign", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # reminder|overdue|escalation|digest|notice
    sa.Column("step", sa.String(64), nullable=False),
    sa.Column("obligation", sa.String(64), nullable=True),
    sa.Column("periods", sa.JSON, nullable=False),  # occurrence keys the message is about
    sa.Column("units", sa.JSON, nullable=False),
    sa.Column("recipient_id", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(8), nullable=False),
    sa.Column("due_at", UtcDateTime, nullable=False),  # the planned moment
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),  # when it may be claimed
    sa.Column("expires_at", UtcDateTime, nullable=True),  # after this it is stale
    sa.Column("status", sa.String(12), nullable=False, server_default="pending"),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("lease_until", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("sent_at", UtcDateTime, nullable=True),
    sa.Column("provider_id", sa.String(128), nullable=True),
    sa.Column("subject", sa.Text, nullable=True),
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("address", sa.String(256), nullable=True),
    # The bundle: [{obligation, period, unit, step, kind, expires}], most urgent first.
    sa.Column("items", sa.JSON, nullable=True),
    sa.Index("ix_messages_claim", "status", "next_attempt_at"),
    sa.Index("ix_messages_recipient_sent", "recipient_id", "sent_at"),  # the daily SMS cap
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "message_id", BigId, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("worker", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # sent|transient|permanent|cancelled|stale
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("provider_id", sa.String(128), nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_delivery_attempts_message", "message_id"),
)

planner_state = sa.Table(
    "planner_state",
    metadata,
    sa.Column("campaign", sa.String(64), primary_key=True),
    sa.Column("planned_through", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# SMS reserved per phone number and local day (the daily cap), shared by every replica:
# a conditional upsert takes a slot, a failed send gives it back.
sms_quota = sa.Table(
    "sms_quota",
    metadata,
    sa.Column("campaign", sa.String(64), primary_key=True),
    sa.Column("phone", sa.String(32), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("used", sa.Integer, nullable=False),
)

# --- Console accounts (migration 0004): users, API tokens, personal links, throttle ----------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),  # office-admin | office | supervisor
    sa.Column("scope", sa.String(64), nullable=True),  # supervisors: the unit of their subtree
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("disabled_at", UtcDateTime, nullable=True),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # sha256 hex
    sa.Column("label", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # office | supervisor
    sa.Column("scope", sa.String(64), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
)

# A person's link carries the version it was issued with; bumping it revokes every
# earlier link of that person (rotating the signing key revokes everybody's).
person_links = sa.Table(
    "person_links",
    metadata,
    sa.Column("person_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

login_throttle = sa.Table(
    "login_throttle",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("window_start", UtcDateTime, nullable=False),
    sa.Column("locked_until", UtcDateTime, nullable=True),
)

# Client-supplied idempotency keys of API writes: a repeated request answers the first
# answer again instead of writing twice.
api_requests = sa.Table(
    "api_requests",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("principal", sa.String(128), nullable=False),
    sa.Column("idem_key", sa.String(128), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # sha256 of the request body
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("response", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("principal", "idem_key", name="uq_api_requests_principal_key"),
)

# -- intake (issue 11): received files, the office's review queue, directory changes ------

intake_evidence = sa.Table(
    "intake_evidence",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("campaign", sa.String(64), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),  # of the file (or of a bare e-mail)
    sa.Column("source", sa.String(16), nullable=False),  # inbound-mail | upload
    sa.Column("message_id", sa.String(512), nullable=True),
    sa.Column("filename", sa.Text, nullable=False, server_default=""),
    sa.Column("sender", sa.String(256), nullable=True),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("stored_path", sa.Text, nullable=False, server_default=""),
    sa.Column("unit_id", sa.String(64), nullable=True),
    sa.Column("obligation", sa.String(64), nullable=True),
    sa.Column("period", sa.String(32), nullable=True),
    sa.Column("rows", sa.JSON, nullable=False),  # parsed rows, bad values kept as text
    sa.Column("problems", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending|recorded|review|rejected
    sa.Column("submission_ids", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("campaign", "sha256", name="uq_intake_evidence_sha256"),
    sa.Index("ix_intake_evidence_message", "campaign", "message_id"),
    sa.Index("ix_intake_evidence_occurrence", "campaign", "obligation", "period"),
)

intake_review = sa.Table(
    "intake_review",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("campaign", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # submission | liaison
    sa.Column("evidence_id", BigId, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("proposal", sa.JSON, nullable=False),
    sa.Column("status", sa.String(12), nullable=False, server_default="open"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("decided_at", UtcDateTime, nullable=True),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("decision", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_intake_review_status", "campaign", "status"),
)

directory_changes = sa.Table(
    "directory_changes",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("campaign", sa.String(64), nullable=False),
    sa.Column("review_id", BigId, nullable=True),
    sa.Column("unit_id", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(64), nullable=False),
    sa.Column("before", sa.JSON, nullable=True),
    sa.Column("after", sa.JSON, nullable=False),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("applied_at", UtcDateTime, nullable=False),
    sa.Column("applied_by", sa.String(128), nullable=False),
)
