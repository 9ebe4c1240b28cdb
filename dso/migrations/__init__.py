"""The schema revisions of the DSO database, one module each (`rNNNN_<what it does>.py`),
applied by `petra <role> migrate` through alembic; the head is the store module's
`SCHEMA_REVISION`."""
