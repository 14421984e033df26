"""key labels, roles, allowed models, quotas, expiry, rotation; the hash-chained audit trail"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

GENESIS = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("role", sa.String(20), nullable=False, server_default="key"))
        batch.add_column(sa.Column("labels", sa.JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("allowed_models", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("quotas", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("previous_secret_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("previous_valid_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("rotation_period_days", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("rotation_grace_seconds", sa.Integer, nullable=False, server_default="86400"))
        batch.add_column(sa.Column("next_rotation_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pending_secret", sa.Text, nullable=True))
        batch.create_index("ix_api_keys_next_rotation_at", ["next_rotation_at"])
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("endpoint", sa.String(300), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(300), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_tenant_seq", "audit_events", ["tenant_id", "seq"])
    op.create_index("ux_audit_completed", "audit_events", ["request_id", "action"], unique=True,
                    sqlite_where=sa.text("action = 'request.completed'"),
                    postgresql_where=sa.text("action = 'request.completed'"))
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_table("audit_events")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_next_rotation_at")
        for name in ("pending_secret", "next_rotation_at", "rotation_grace_seconds", "rotation_period_days",
                     "rotated_at", "previous_valid_until", "previous_secret_sha256", "expires_at", "quotas",
                     "allowed_models", "labels", "role"):
            batch.drop_column(name)
