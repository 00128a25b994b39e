"""Inference: sliding-window prediction on preprocessed volumes (and, later, inversion to the scan)."""
