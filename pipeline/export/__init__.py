"""Files for clinical viewers (NIfTI, 3D Slicer, ITK-SNAP, DICOM SEG), all generated from the one label registry."""
