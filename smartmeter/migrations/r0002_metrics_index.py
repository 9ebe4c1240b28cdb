"""Revision 0002: the index meter_outbox_queued, and a meta schema no older release writes into.

The meter counts the bills queued in its outbox (which keeps every delivered message) at every
scrape of its metrics: the index on meter_outbox (kind, delivered_ms) keeps that cheap. The
meta table's schema becomes 2, which every release from before schema revisions refuses ("use
a PETra release that knows it"), so none of them writes into a store this release migrated;
the downgrade gives both back."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

META = sa.table("meter_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    op.create_index("meter_outbox_queued", "meter_outbox", ["kind", "delivered_ms"])
    op.execute(META.update().where(META.c.key == "schema").values(value="2"))


def downgrade() -> None:
    op.execute(META.update().where(META.c.key == "schema").values(value="1"))
    op.drop_index("meter_outbox_queued", table_name="meter_outbox")
