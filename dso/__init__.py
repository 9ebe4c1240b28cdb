"""The DSO authority node: admin API, regulation, billing intake, grid controller."""
