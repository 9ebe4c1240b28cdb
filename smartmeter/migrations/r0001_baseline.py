"""Revision 0001, the baseline: the meter's database as PETra's release before schema revisions
(commit 02515eb) created it. A store it wrote is stamped with this revision by `migrate` once
its tables are found to be these."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meter_chain",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("interval", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("output", sa.Integer(), nullable=True),
        sa.Column("key_index", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("meter_chain_by_seq", "meter_chain", ["seq"], unique=False)
    op.create_table(
        "meter_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "meter_intervals",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("interval", sa.BigInteger(), nullable=False),
        sa.Column("import_j", sa.BigInteger(), nullable=False),
        sa.Column("export_j", sa.BigInteger(), nullable=False),
        sa.Column("net_j", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("source", "interval"),
    )
    op.create_table(
        "meter_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "meter_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "meter_readings",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("import_wh", sa.Float(), nullable=True),
        sa.Column("export_wh", sa.Float(), nullable=True),
        sa.Column("power_w", sa.Float(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("meter_readings_by_source", "meter_readings", ["source", "seq"], unique=False)
    op.create_table(
        "meter_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # The schema the release's own check wants to find (it wrote it on first opening).
    meta = sa.table("meter_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.bulk_insert(meta, [{"key": "schema", "value": "1"}])


def downgrade() -> None:
    op.drop_table("meter_state")
    op.drop_index("meter_readings_by_source", table_name="meter_readings")
    op.drop_table("meter_readings")
    op.drop_table("meter_outbox")
    op.drop_table("meter_meta")
    op.drop_table("meter_intervals")
    op.drop_table("meter_chain_head")
    op.drop_index("meter_chain_by_seq", table_name="meter_chain")
    op.drop_table("meter_chain")
