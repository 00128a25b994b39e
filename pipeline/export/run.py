"""The ``export`` stage: predicted label maps to the files clinical viewers open.

Per scan, in ``<out_dir>/<name>/``: ``<name>_seg.nii.gz`` (uint8, the scan's exact geometry, no
free-text header fields), ``<name>.seg.nrrd`` (3D Slicer) and, for DICOM input, ``<name>_seg.dcm``
(DICOM SEG). Once per export folder: ``labels.ctbl`` (Slicer colour table) and
``itksnap_labels.txt`` (ITK-SNAP label descriptions). Every file is written under a temporary name
and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.config import ExportFormat, PipelineConfig
from pipeline.data.dicom import DicomSeries
from pipeline.data.labels import LabelRegistry
from pipeline.data.layout import load_dataset
from pipeline.data.nifti import read_nifti, write_nifti
from pipeline.errors import DatasetError, InvalidInputError, Problem
from pipeline.export.dicom_seg import write_dicom_seg
from pipeline.export.itksnap import write_itksnap_labels
from pipeline.export.slicer import write_color_table, write_seg_nrrd
from pipeline.io_utils import refuse_existing, write_json_atomic

COLOR_TABLE = "labels.ctbl"
ITKSNAP_LABELS = "itksnap_labels.txt"


def export_case(
    folder: Path,
    name: str,
    label_map: np.ndarray,
    affine: np.ndarray,
    registry: LabelRegistry,
    formats: tuple[ExportFormat, ...],
    dicom: DicomSeries | None = None,
    model_names: tuple[str, ...] = (),
) -> list[Path]:
    """Write one scan's mask in every requested per-scan format.

    Args:
        folder: the scan's export folder (created).
        name: the scan's output name (file stem).
        label_map: integer labels (x, y, z) on the scan's grid.
        affine: the scan's RAS+ affine.
        registry: the label registry.
        formats: requested formats (``dicom_seg`` is written only when ``dicom`` is given).
        dicom: the source series, for DICOM SEG.
        model_names: recorded in the DICOM SEG algorithm identification.

    Returns:
        The written paths.
    """
    folder = Path(folder)
    written = []
    if "nifti" in formats:
        written.append(folder / f"{name}_seg.nii.gz")
        write_nifti(written[-1], label_map, affine, np.uint8 if label_map.max(initial=0) < 256 else np.uint16)
    if "seg_nrrd" in formats:
        written.append(folder / f"{name}.seg.nrrd")
        write_seg_nrrd(written[-1], label_map, affine, registry)
    if "dicom_seg" in formats and dicom is not None:
        written.append(folder / f"{name}_seg.dcm")
        write_dicom_seg(written[-1], label_map, dicom.files, registry, __version__, model_names)
    return written


def write_label_tables(folder: Path, registry: LabelRegistry, formats: tuple[ExportFormat, ...]) -> list[Path]:
    """Write the Slicer colour table and the ITK-SNAP label file (as requested) into ``folder``."""
    written = []
    if "slicer_colors" in formats:
        written.append(Path(folder) / COLOR_TABLE)
        write_color_table(written[-1], registry)
    if "itksnap" in formats:
        written.append(Path(folder) / ITKSNAP_LABELS)
        write_itksnap_labels(written[-1], registry)
    return written


def export_dataset(cfg: PipelineConfig, overwrite: bool = False) -> Path:
    """Export every predicted test mask of ``cfg.infer.out_dir`` for the viewers.

    The dataset's scans are NIfTI, so no DICOM SEG is written here (``segpipe predict`` on a DICOM
    series writes one). Returns the path of ``<out_dir>/export.json`` (what was written).

    Raises:
        DatasetError: missing or unreadable predictions, all listed, or existing outputs (T7).
    """
    dataset = load_dataset(cfg.data.root)
    out_dir, formats = Path(cfg.export.out_dir), cfg.export.formats
    cases = dataset.split("test")
    predictions = {case.case_id: Path(cfg.infer.out_dir) / f"{case.case_id}.nii.gz" for case in cases}
    refuse_existing([out_dir / case_id for case_id in predictions], overwrite)
    problems, written = [], {}
    for case_id, path in predictions.items():
        try:
            loaded = read_nifti(path, case_id)
        except InvalidInputError as exc:
            problems.append(Problem(str(exc.path), exc.code or "F1", "error", exc.reason, case_id))
            continue
        paths = export_case(out_dir / case_id, case_id, np.asarray(loaded.data), loaded.affine, dataset.labels, formats)
        written[case_id] = [str(p) for p in paths]
    if problems:
        raise DatasetError(problems, f"export failed for {len(problems)} of {len(predictions)} case(s)")
    tables = write_label_tables(out_dir, dataset.labels, formats)
    summary = out_dir / "export.json"
    skipped = ["dicom_seg: the dataset's scans are NIfTI, not DICOM series"] if "dicom_seg" in formats else []
    write_json_atomic(summary, {"cases": written, "label_tables": [str(p) for p in tables], "skipped": skipped})
    return summary
