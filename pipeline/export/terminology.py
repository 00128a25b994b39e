"""Coded anatomy for viewer files: SNOMED CT category and type of each label (from the label registry).

Labels with a SNOMED CT code (see ``pipeline.data.labels.KNOWN_STRUCTURES``) are typed as that
structure in the category *Anatomical Structure*; a label without one is typed as *Tissue*, its
name kept as the segment label.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.data.labels import Label

ANATOMICAL_STRUCTURE = ("123037004", "Anatomical Structure")
TISSUE = ("85756007", "Tissue")


@dataclass(frozen=True)
class SegmentCoding:
    """(code, meaning) pairs of a segment's SNOMED CT category and type."""

    category: tuple[str, str]
    type: tuple[str, str]


def coding_for(label: Label) -> SegmentCoding:
    """SNOMED CT category and type of ``label``."""
    if label.snomed_code:
        return SegmentCoding(ANATOMICAL_STRUCTURE, (label.snomed_code, label.snomed_meaning))
    return SegmentCoding(TISSUE, TISSUE)


def slicer_terminology_tag(label: Label) -> str:
    """The value of a Slicer ``SegmentN_Tags`` entry: completed status plus the terminology entry."""
    coding = coding_for(label)
    category = f"SCT^{coding.category[0]}^{coding.category[1]}"
    kind = f"SCT^{coding.type[0]}^{coding.type[1]}"
    entry = (
        f"Segmentation category and type - 3D Slicer General Anatomy list~{category}~{kind}~^^~"
        "Anatomic codes - DICOM master list~^^~^^"
    )
    return f"Segmentation.Status:completed|TerminologyEntry:{entry}|"
