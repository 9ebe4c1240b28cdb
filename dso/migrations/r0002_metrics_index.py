"""Revision 0002: the index dso_bills_by_status, and a meta schema no older release writes into.

The DSO counts its bills by status at every scrape of its metrics: the index on dso_bills
(status) keeps that cheap however many bills the years bring. The meta table's schema becomes
2, which every release from before schema revisions refuses ("use a PETra release that knows
it"), so none of them writes into a store this release migrated; the downgrade gives both
back."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

META = sa.table("dso_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    op.create_index("dso_bills_by_status", "dso_bills", ["status"])
    op.execute(META.update().where(META.c.key == "schema").values(value="2"))


def downgrade() -> None:
    op.execute(META.update().where(META.c.key == "schema").values(value="1"))
    op.drop_index("dso_bills_by_status", table_name="dso_bills")
