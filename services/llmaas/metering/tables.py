"""The metering service's tables (the schema itself is created by migrations/)."""

import sqlalchemy as sa

metadata = sa.MetaData()

# One row per request: written at reservation, completed (once) at settlement. The primary key on request_id is what
# makes settlement idempotent: a retried hand-off finds the row already settled and changes nothing. Amounts are whole
# nano-EUR, energy whole micro-Wh (llmaas.metering.pricing states the rounding rule). `day` and `month` (UTC, of the
# reservation) are plain strings so that grouping by period is the same SQL on SQLite and PostgreSQL.
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
    sa.Column("kind", sa.String(16), nullable=False, server_default="chat"),
    sa.Column("reserved_audio_ms", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reserved_cost_nano", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=True),
    sa.Column("audio_ms", sa.BigInteger, nullable=True),
    sa.Column("cost_nano", sa.BigInteger, nullable=True),
    sa.Column("energy_uwh", sa.BigInteger, nullable=True),
    sa.Column("kwh_per_million", sa.String(32), nullable=True),
    # The limit windows this request was charged to, as JSON [[scope, window_start], ...]: settlement corrects them.
    sa.Column("windows", sa.Text, nullable=False, server_default="[]"),
    sa.Column("day", sa.String(10), nullable=True),
    sa.Column("month", sa.String(7), nullable=True),
    sa.Index("ix_usage_tenant_key", "tenant_id", "key_id"),
    sa.Index("ix_usage_tenant_day", "tenant_id", "day"),
    sa.Index("ix_usage_unsettled", "settled_at", "reserved_at"),
)

# One row per limit window (a key's quota slot, a tenant's minute, hour, day or month): what is charged to it now,
# reservations included. Reserve increments it with a conditional UPDATE (`... WHERE tokens + :n <= :limit`), which
# is atomic on SQLite (one writer) and PostgreSQL (row lock, WHERE re-checked on the locked row).
limit_window = sa.Table(
    "limit_window",
    metadata,
    sa.Column("scope", sa.String(160), primary_key=True),
    sa.Column("window_start", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("window_end", sa.BigInteger, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_nano", sa.BigInteger, nullable=False),
)

# A tenant's tier (absent: the default tier), with an optional monthly budget of its own.
tenant_tier = sa.Table(
    "tenant_tier",
    metadata,
    sa.Column("tenant_id", sa.String(32), primary_key=True),
    sa.Column("tier", sa.String(32), nullable=False),
    sa.Column("monthly_budget_nano", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
