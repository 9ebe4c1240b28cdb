"""Revision 0002: installation costs as 64-bit integers, and a meta schema no older release
writes into.

mon_installation.cost_micro holds micro-units of the currency, and a 32-bit INTEGER overflows
at 2,148 EUR: PostgreSQL refused every real installation's cost. It becomes a BIGINT (SQLite
rebuilds the table, as it alters no column type in place). The meta table's schema becomes 2,
which every release from before schema revisions refuses ("use a PETra release that knows
it"), so none of them writes into a store this release migrated; the downgrade gives both
back (a cost beyond 32 bits then fails it on PostgreSQL rather than being cut)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

META = sa.table("mon_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def installation(cost: sa.types.TypeEngine[int]) -> sa.Table:
    """mon_installation as revision 0001 made it, with `cost` as cost_micro's type: SQLite's
    rebuild copies from it, so the SQL of --sql needs no database to read it from."""
    return sa.Table(
        "mon_installation",
        sa.MetaData(),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("community_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("peak_kw", sa.Float(), nullable=False),
        sa.Column("cost_micro", cost, nullable=True),
        sa.Column("commissioned", sa.String(length=10), nullable=True),
        sa.ForeignKeyConstraint(["community_id"], ["mon_community.id"]),
        sa.PrimaryKeyConstraint("id"),
    )


def upgrade() -> None:
    with op.batch_alter_table("mon_installation", copy_from=installation(sa.Integer())) as batch:
        batch.alter_column("cost_micro", type_=sa.BigInteger(), existing_nullable=True)
    op.execute(META.update().where(META.c.key == "schema").values(value="2"))


def downgrade() -> None:
    op.execute(META.update().where(META.c.key == "schema").values(value="1"))
    with op.batch_alter_table("mon_installation", copy_from=installation(sa.BigInteger())) as batch:
        batch.alter_column("cost_micro", type_=sa.Integer(), existing_nullable=True)
