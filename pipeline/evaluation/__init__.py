"""Evaluation: overlap metrics and visual QC (overlays, curves)."""
