"""recent refusals and flags per tenant (issue 21): metadata only, never the prompt"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "guard_refusals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("reasons", sa.String(512), nullable=False),
    )
    op.create_index("guard_refusals_by_tenant", "guard_refusals", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("guard_refusals_by_tenant", "guard_refusals")
    op.drop_table("guard_refusals")
