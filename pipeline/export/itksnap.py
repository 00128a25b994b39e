"""ITK-SNAP label description file (plain text), from the label registry."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.labels import LabelRegistry
from pipeline.io_utils import atomic_path

HEADER = """################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
################################################
"""


def write_itksnap_labels(path: Path, registry: LabelRegistry) -> None:
    """Write one row per label, ``IDX R G B A VIS MSH "LABEL"``; label 0 is ``"Clear Label"`` (invisible)."""
    rows = [f'{0:5d} {0:5d} {0:4d} {0:4d} {0.0:8.2f} {0:2d} {0:2d}    "Clear Label"']
    for label in registry.foreground():
        r, g, b = label.color
        name = label.name.replace('"', "'")
        rows.append(f'{label.value:5d} {r:5d} {g:4d} {b:4d} {1.0:8.2f} {1:2d} {1:2d}    "{name}"')
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(HEADER + "\n".join(rows) + "\n")
