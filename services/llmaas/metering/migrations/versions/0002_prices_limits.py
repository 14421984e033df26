"""prices, limit windows, tiers"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    for column in (
        sa.Column("kind", sa.String(16), nullable=False, server_default="chat"),
        sa.Column("reserved_audio_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reserved_cost_nano", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=True),
        sa.Column("audio_ms", sa.BigInteger, nullable=True),
        sa.Column("cost_nano", sa.BigInteger, nullable=True),
        sa.Column("energy_uwh", sa.BigInteger, nullable=True),
        sa.Column("kwh_per_million", sa.String(32), nullable=True),
        sa.Column("windows", sa.Text, nullable=False, server_default="[]"),
        sa.Column("day", sa.String(10), nullable=True),
        sa.Column("month", sa.String(7), nullable=True),
    ):
        op.add_column("usage", column)
    op.create_index("ix_usage_tenant_day", "usage", ["tenant_id", "day"])
    op.create_index("ix_usage_unsettled", "usage", ["settled_at", "reserved_at"])
    op.create_table(
        "limit_window",
        sa.Column("scope", sa.String(160), primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("window_end", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_nano", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tenant_tier",
        sa.Column("tenant_id", sa.String(32), primary_key=True),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("monthly_budget_nano", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_tier")
    op.drop_table("limit_window")
    op.drop_index("ix_usage_unsettled", "usage")
    op.drop_index("ix_usage_tenant_day", "usage")
    for name in ("month", "day", "windows", "kwh_per_million", "energy_uwh", "cost_nano", "audio_ms",
                 "reasoning_tokens", "reserved_cost_nano", "reserved_audio_ms", "kind"):
        op.drop_column("usage", name)
