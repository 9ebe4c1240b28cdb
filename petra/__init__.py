"""The `petra` command: one console script with a sub-command per role."""
