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
