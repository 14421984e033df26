"""The guard service's tables (the schema itself is created by migrations/)."""

import sqlalchemy as sa

metadata = sa.MetaData()

guard_policies = sa.Table(
    "guard_policies",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("mode", sa.String(16), nullable=False),  # enforce, shadow, off
    sa.Column("threshold", sa.Float, nullable=False),  # 0: the service's default
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Every flagged verdict (blocked under enforce, flagged under shadow), for the tenant's admin to find false positives:
# when, the score, the threshold and the reason codes; never the prompt's text.
guard_refusals = sa.Table(
    "guard_refusals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),  # block, flag
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("reasons", sa.String(512), nullable=False),  # comma-separated reason codes
    sa.Index("guard_refusals_by_tenant", "tenant_id", "created_at"),
)
