"""Revision 0001, the baseline: the DSO database as PETra's release before schema revisions
(commit 02515eb) created it. A store it wrote is stamped with this revision by `migrate` once
its tables are found to be these."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The audit log's append-only triggers, as `dso.store` set them up beside its tables.
APPEND_ONLY = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS dso_audit_no_{verb.lower()} BEFORE {verb} ON dso_audit_log "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        for verb in ("UPDATE", "DELETE")
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION dso_audit_append_only() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql",
        "DROP TRIGGER IF EXISTS dso_audit_append_only ON dso_audit_log",
        "CREATE TRIGGER dso_audit_append_only BEFORE UPDATE OR DELETE ON dso_audit_log "
        "FOR EACH ROW EXECUTE FUNCTION dso_audit_append_only()",
    ],
}
DROP_APPEND_ONLY = {
    "sqlite": [f"DROP TRIGGER IF EXISTS dso_audit_no_{verb}" for verb in ("update", "delete")],
    "postgresql": [
        "DROP TRIGGER IF EXISTS dso_audit_append_only ON dso_audit_log",
        "DROP FUNCTION IF EXISTS dso_audit_append_only()",
    ],
}


def upgrade() -> None:
    op.create_table(
        "dso_audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("entry_hash"),
    )
    op.create_table(
        "dso_bill_deposits",
        sa.Column("tx", sa.LargeBinary(length=32), nullable=False),
        sa.Column("index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("bill", sa.LargeBinary(length=32), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("interval", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tx", "index", "bill"),
    )
    op.create_table(
        "dso_bills",
        sa.Column("id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("interval", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("closed_height", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("discrepancies", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("meter", "interval", name="dso_bills_one_per_interval"),
    )
    op.create_index("dso_bills_by_interval", "dso_bills", ["interval"], unique=False)
    op.create_index("dso_bills_by_owner", "dso_bills", ["owner", "interval"], unique=False)
    op.create_table(
        "dso_chain_blocks",
        sa.Column("height", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("height"),
    )
    op.create_table(
        "dso_chain_transactions",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("txid", sa.LargeBinary(length=32), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("interval", sa.BigInteger(), nullable=False),
        sa.Column("epa_first", sa.BigInteger(), nullable=True),
        sa.Column("epa_last", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("txid"),
    )
    op.create_index(
        "dso_chain_by_meter", "dso_chain_transactions", ["meter", "height"], unique=False
    )
    op.create_table(
        "dso_default_limits",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("max_epa", sa.BigInteger(), nullable=False),
        sa.Column("max_eca", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "dso_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "dso_meter_owners",
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("follows_default", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("meter"),
    )
    op.create_table(
        "dso_operators",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "dso_proposals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("interval", sa.BigInteger(), nullable=False),
        sa.Column("price_consumption", sa.BigInteger(), nullable=False),
        sa.Column("price_production", sa.BigInteger(), nullable=False),
        sa.Column("net_load_w", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("regulation", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "dso_regulations",
        sa.Column("nonce", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("txid", sa.LargeBinary(length=32), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("height", sa.BigInteger(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("effect", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
        sa.UniqueConstraint("txid"),
    )
    op.create_table(
        "dso_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )

    for statement in APPEND_ONLY.get(op.get_context().dialect.name, ()):
        op.execute(statement)
    # The schema the release's own check wants to find (it wrote it on first opening).
    meta = sa.table("dso_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.bulk_insert(meta, [{"key": "schema", "value": "1"}])


def downgrade() -> None:
    for statement in DROP_APPEND_ONLY.get(op.get_context().dialect.name, ()):
        op.execute(statement)
    op.drop_table("dso_settings")
    op.drop_table("dso_regulations")
    op.drop_table("dso_proposals")
    op.drop_table("dso_operators")
    op.drop_table("dso_meter_owners")
    op.drop_table("dso_meta")
    op.drop_table("dso_default_limits")
    op.drop_index("dso_chain_by_meter", table_name="dso_chain_transactions")
    op.drop_table("dso_chain_transactions")
    op.drop_table("dso_chain_blocks")
    op.drop_index("dso_bills_by_owner", table_name="dso_bills")
    op.drop_index("dso_bills_by_interval", table_name="dso_bills")
    op.drop_table("dso_bills")
    op.drop_table("dso_bill_deposits")
    op.drop_table("dso_audit_log")
