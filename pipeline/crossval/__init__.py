"""Cross-validation: seeded split files, out-of-fold scoring on each scan's own grid, and the decisions it makes."""
