"""tenants: opt-in to having a retired model served by its recommended successor"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # sa.false() renders as each dialect's false literal (0 on SQLite, false on PostgreSQL); existing tenants: off.
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("serve_successor", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("serve_successor")
