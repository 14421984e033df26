"""audit_events.count: how many requests one record stands for (failed authentications are recorded as one record
per client address, reason and short window, carrying their count); 1 for every other record"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    # Existing records stand for one request each; their hashes do not cover the count while it is 1
    # (llmaas.auth.audit.canonical), so the chain written before this migration still verifies.
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("count", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("count")
