"""Revision 0001, the baseline: the ledger's store as PETra's release before schema revisions
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
        "blocks",
        sa.Column("height", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("prev", sa.LargeBinary(length=32), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sequencer_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("height"),
        sa.UniqueConstraint("hash"),
    )
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "index"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "outputs",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("address", sa.LargeBinary(length=32), nullable=False),
        sa.Column("kind", sa.String(length=3), nullable=False),
        sa.Column("power", sa.BigInteger(), nullable=True),
        sa.Column("start_interval", sa.BigInteger(), nullable=True),
        sa.Column("end_interval", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", "index"),
        sqlite_with_rowid=False,
    )
    op.create_index(("ix_outputs_address"), "outputs", ["address"], unique=False)
    op.create_table(
        "spends",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("spender", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", "index"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "transactions",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("txid", sa.LargeBinary(length=32), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("txid"),
    )
    op.create_index(
        "ix_transactions_state",
        "transactions",
        ["seq"],
        unique=False,
        sqlite_where=sa.text("type != 'transfer'"),
        postgresql_where=sa.text("type != 'transfer'"),
    )
    # The schema the release's own check wants to find (it wrote it on first opening).
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.LargeBinary))
    op.bulk_insert(meta, [{"key": "schema", "value": b"4"}])


def downgrade() -> None:
    op.drop_index(
        "ix_transactions_state",
        table_name="transactions",
        sqlite_where=sa.text("type != 'transfer'"),
        postgresql_where=sa.text("type != 'transfer'"),
    )
    op.drop_table("transactions")
    op.drop_table("spends")
    op.drop_index(("ix_outputs_address"), table_name="outputs")
    op.drop_table("outputs")
    op.drop_table("meta")
    op.drop_table("merkle_nodes")
    op.drop_table("blocks")
