"""segpipe: a reproducible medical volumetric segmentation pipeline."""

__version__ = "0.1.0"
