"""Dataset layouts, NIfTI IO with geometry, phantom generator, integrity verification, label registry."""
