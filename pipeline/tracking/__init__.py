"""Experiment tracking (MLflow): store set-up, run tags, artifacts."""
