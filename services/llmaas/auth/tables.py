"""The auth service's tables (the schema itself is created by migrations/)."""

import sqlalchemy as sa

metadata = sa.MetaData()

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Opt-in: a retired model is served by its recommended successor (carried in the keys' signed identities).
    sa.Column("serve_successor", sa.Boolean, nullable=False, server_default=sa.false()),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("role", sa.String(20), nullable=False, server_default="key"),
    sa.Column("labels", sa.JSON, nullable=False, server_default="{}"),
    sa.Column("allowed_models", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("quotas", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    # Rotation: the secret before the last rotation stays valid until previous_valid_until.
    sa.Column("previous_secret_sha256", sa.String(64), nullable=True),
    sa.Column("previous_valid_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rotation_period_days", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rotation_grace_seconds", sa.Integer, nullable=False, server_default="86400"),
    sa.Column("next_rotation_at", sa.DateTime(timezone=True), nullable=True, index=True),
    # The secret an automatic rotation made, AES-GCM encrypted, until the tenant's admin retrieves it (once).
    sa.Column("pending_secret", sa.Text, nullable=True),
)

# Append-only and hash-chained: each record's hash covers the previous record's hash, so editing, deleting or
# inserting a record breaks every hash after it. audit_head holds the chain's tip (one row), which also serialises
# writers across replicas: appending starts by updating it.
audit_events = sa.Table(
    "audit_events",
    metadata,
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
    # How many requests the record stands for: failed authentications are aggregated (llmaas.auth.abuse).
    sa.Column("count", sa.Integer, nullable=False, server_default="1"),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_tenant_seq", "tenant_id", "seq"),
    # request.completed is recorded once per request id, however often the router retries.
    sa.Index("ux_audit_completed", "request_id", "action", unique=True,
             sqlite_where=sa.text("action = 'request.completed'"),
             postgresql_where=sa.text("action = 'request.completed'")),
)

audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
