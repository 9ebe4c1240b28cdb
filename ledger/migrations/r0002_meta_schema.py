"""Revision 0002: the meta schema no older release writes into.

The tables are unchanged. The meta table's schema becomes 5, which every
release from before schema revisions refuses ("use a PETra release that knows it"), so none of
them writes into a store this release migrated; the downgrade gives it back."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

META = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.LargeBinary))


def upgrade() -> None:
    op.execute(META.update().where(META.c.key == "schema").values(value=b"5"))


def downgrade() -> None:
    op.execute(META.update().where(META.c.key == "schema").values(value=b"4"))
