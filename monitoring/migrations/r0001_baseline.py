"""Revision 0001, the baseline: the monitoring database as PETra's release before schema revisions
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
        "mon_community",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("price_micro_per_kwh", sa.Integer(), nullable=False),
        sa.Column("export_micro_per_kwh", sa.Integer(), nullable=False),
        sa.Column("co2_g_per_kwh", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "mon_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "mon_refusal",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Integer(), nullable=False),
        sa.Column("last_message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("source", "reason"),
    )
    op.create_table(
        "mon_apikey",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("access", sa.String(length=8), nullable=False),
        sa.Column("community_id", sa.String(length=64), nullable=True),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("last_used", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["mon_community.id"],
        ),
        sa.PrimaryKeyConstraint("key_hash"),
    )
    op.create_table(
        "mon_installation",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("community_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("peak_kw", sa.Float(), nullable=False),
        sa.Column("cost_micro", sa.Integer(), nullable=True),
        sa.Column("commissioned", sa.String(length=10), nullable=True),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["mon_community.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "mon_member",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("community_id", sa.String(length=64), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["mon_community.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("community_id", "ref"),
    )
    op.create_table(
        "mon_node",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("community_id", sa.String(length=64), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("silent_after_s", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.Integer(), nullable=False),
        sa.Column("last_seen", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["mon_community.id"],
        ),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "mon_agreement",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("community_id", sa.String(length=64), nullable=False),
        sa.Column("installation_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("first_day", sa.String(length=10), nullable=False),
        sa.Column("end_day", sa.String(length=10), nullable=True),
        sa.Column("objective", sa.String(length=16), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("replaces", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["mon_community.id"],
        ),
        sa.ForeignKeyConstraint(
            ["installation_id"],
            ["mon_installation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["replaces"],
            ["mon_agreement.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "mon_agreement_installation",
        "mon_agreement",
        ["installation_id", "first_day"],
        unique=False,
    )
    op.create_table(
        "mon_supply_point",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("community_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=True),
        sa.Column("installation_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("contracted_kw", sa.Float(), nullable=True),
        sa.Column("share", sa.Float(), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["mon_community.id"],
        ),
        sa.ForeignKeyConstraint(
            ["installation_id"],
            ["mon_installation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["mon_member.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "mon_user",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("community_id", sa.String(length=64), nullable=True),
        sa.Column("member_id", sa.Integer(), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.Integer(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["mon_community.id"],
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["mon_member.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "mon_agreement_share",
        sa.Column("agreement_id", sa.Integer(), nullable=False),
        sa.Column("supply_point_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("millionths", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["mon_agreement.id"],
        ),
        sa.ForeignKeyConstraint(
            ["supply_point_id"],
            ["mon_supply_point.id"],
        ),
        sa.PrimaryKeyConstraint("agreement_id", "supply_point_id"),
    )
    op.create_table(
        "mon_feed",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("supply_point_id", sa.String(length=32), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("min_ok", sa.Float(), nullable=True),
        sa.Column("max_ok", sa.Float(), nullable=True),
        sa.Column("last_time", sa.Integer(), nullable=True),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node"],
            ["mon_node.name"],
        ),
        sa.ForeignKeyConstraint(
            ["supply_point_id"],
            ["mon_supply_point.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("node", "name"),
    )
    op.create_index("mon_feed_supply_point", "mon_feed", ["supply_point_id"], unique=False)
    op.create_table(
        "mon_session",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("expires", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["mon_user.id"],
        ),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("mon_session_user", "mon_session", ["user_id"], unique=False)
    op.create_table(
        "mon_aggregate",
        sa.Column("feed_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("estimated", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["feed_id"],
            ["mon_feed.id"],
        ),
        sa.PrimaryKeyConstraint("feed_id", "period", "start"),
    )
    op.create_table(
        "mon_sample",
        sa.Column("feed_id", sa.Integer(), nullable=False),
        sa.Column("t", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["feed_id"],
            ["mon_feed.id"],
        ),
        sa.PrimaryKeyConstraint("feed_id", "t"),
    )
    # The schema the release's own check wants to find (it wrote it on first opening).
    meta = sa.table("mon_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.bulk_insert(meta, [{"key": "schema", "value": "1"}])


def downgrade() -> None:
    op.drop_table("mon_sample")
    op.drop_table("mon_aggregate")
    op.drop_index("mon_session_user", table_name="mon_session")
    op.drop_table("mon_session")
    op.drop_index("mon_feed_supply_point", table_name="mon_feed")
    op.drop_table("mon_feed")
    op.drop_table("mon_agreement_share")
    op.drop_table("mon_user")
    op.drop_table("mon_supply_point")
    op.drop_index("mon_agreement_installation", table_name="mon_agreement")
    op.drop_table("mon_agreement")
    op.drop_table("mon_node")
    op.drop_table("mon_member")
    op.drop_table("mon_installation")
    op.drop_table("mon_apikey")
    op.drop_table("mon_refusal")
    op.drop_table("mon_meta")
    op.drop_table("mon_community")
