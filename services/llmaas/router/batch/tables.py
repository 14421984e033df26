"""The router's tables for files and batches (created by migrations/). Times are Unix seconds, as OpenAI returns them.

No payload is stored in clear: a file's bytes live encrypted on disk (llmaas.router.batch.files), a line's result
encrypted in `batch_lines.result` (llmaas.router.batch.crypto); the rest is metadata.
"""

import sqlalchemy as sa

metadata = sa.MetaData()

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(32), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("filename", sa.String(256), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    # A batch input's number of requests (validated at upload); 0 for other files.
    sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_files_tenant_created", "tenant_id", "created_at"),
    sa.Index("ix_files_expires", "expires_at"),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(32), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    # The creating key's permissions and quotas when the batch was made (JSON, llmaas.router.batch.store): every line
    # is served under them, signed afresh as that key's identity.
    sa.Column("identity", sa.Text, nullable=False),
    sa.Column("client_address", sa.String(64), nullable=False, server_default=""),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("input_file_id", sa.String(40), nullable=False),
    sa.Column("completion_window", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("metadata", sa.Text, nullable=True),
    sa.Column("errors", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    *(sa.Column(f"{stage}_at", sa.BigInteger, nullable=True)
      for stage in ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")),
    sa.Column("total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("completed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("output_file_id", sa.String(40), nullable=True),
    sa.Column("error_file_id", sa.String(40), nullable=True),
    # The worker that runs it, until when (Unix seconds): another router takes it over once the lease has lapsed.
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=False, server_default="0"),
    sa.Index("ix_batches_tenant_created", "tenant_id", "created_at"),
    sa.Index("ix_batches_status", "status"),
)

# One row per input line, made when the batch is created. `attempt` is part of the line's request id (metering's
# idempotency key): a line whose attempt was cut short (worker killed) is released and dispatched again under the next
# attempt, never twice under the same id; a line's result is committed before its usage is settled.
batch_lines = sa.Table(
    "batch_lines",
    metadata,
    sa.Column("batch_id", sa.String(40), primary_key=True),
    sa.Column("line", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),  # pending, running, done
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ok", sa.Boolean, nullable=True),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"),
    # The line's output (OpenAI's batch output line, JSON), encrypted with the tenant's key.
    sa.Column("result", sa.LargeBinary, nullable=True),
    sa.Index("ix_batch_lines_state", "batch_id", "state", "line"),
)
