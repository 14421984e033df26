"""The metering service's tables (the schema itself is created by migrations/)."""

import sqlalchemy as sa

metadata = sa.MetaData()

# One row per request: written at reservation, completed (once) at settlement. The primary key on request_id is what
# makes settlement idempotent: a retried hand-off finds the row already settled and changes nothing.
usage = sa.Table(
    "usage",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(32), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("reserved_input_tokens", sa.BigInteger, nullable=False),
    sa.Column("reserved_output_tokens", sa.BigInteger, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=True),
    sa.Column("completion_tokens", sa.BigInteger, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_usage_tenant_key", "tenant_id", "key_id"),
)
