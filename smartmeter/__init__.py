"""The smart-meter node: readings, issuing, deposits and billing (DESIGN.md section 7)."""
