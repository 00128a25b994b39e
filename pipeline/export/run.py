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
from pipeline.data.header import read_checked
from pipeline.data.labels import LabelRegistry, label_dtype
from pipeline.data.layout import load_dataset
from pipeline.data.nifti import label_array, write_nifti
from pipeline.errors import DatasetError, Problem
from pipeline.export.dicom_seg import write_dicom_seg
from pipeline.export.itksnap import write_itksnap_labels
from pipeline.export.slicer import write_color_table, write_seg_nrrd
from pipeline.io_utils import atomic_dir, refuse_existing, write_json_atomic
from pipeline.parallel import run_guarded
from pipeline.qa.outputs import read_uncertainty_maps

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
    maps: dict[str, np.ndarray] | None = None,
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
        maps: float maps on the scan's grid written as ``<name>_<key>.nii.gz`` (``entropy``, ``mutual_information``:
            load them in 3D Slicer as volumes under the segmentation).

    Returns:
        The written paths. The folder is written whole or not at all (:func:`pipeline.io_utils.atomic_dir`).
    """
    folder = Path(folder)
    names = []
    with atomic_dir(folder) as tmp:
        if "nifti" in formats:
            names.append(f"{name}_seg.nii.gz")
            write_nifti(tmp / names[-1], label_map, affine, label_dtype(int(label_map.max(initial=0)) + 1))
        if "seg_nrrd" in formats:
            names.append(f"{name}.seg.nrrd")
            write_seg_nrrd(tmp / names[-1], label_map, affine, registry)
        if "dicom_seg" in formats and dicom is not None:
            names.append(f"{name}_seg.dcm")
            write_dicom_seg(tmp / names[-1], label_map, dicom.files, registry, __version__, model_names)
        for key, values in (maps or {}).items():
            names.append(f"{name}_{key}.nii.gz")
            write_nifti(tmp / names[-1], values, affine, np.float32)
    return [folder / n for n in names]


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

        def export(case_id=case_id, path=path) -> list[Path]:
            loaded = read_checked(path, case_id, cfg.checks, is_label=True)
            labels = label_array(loaded, dataset.labels.values, case_id)
            maps = read_uncertainty_maps(path.parent, case_id, loaded, cfg.checks)
            return export_case(out_dir / case_id, case_id, labels, loaded.affine, dataset.labels, formats, maps=maps)

        outcome = run_guarded(case_id, path, export)
        if isinstance(outcome, Problem):
            problems.append(outcome)
            continue
        written[case_id] = [str(p) for p in outcome]
    if problems:
        raise DatasetError(problems, f"export failed for {len(problems)} of {len(predictions)} case(s)")
    tables = write_label_tables(out_dir, dataset.labels, formats)
    summary = out_dir / "export.json"
    skipped = ["dicom_seg: the dataset's scans are NIfTI, not DICOM series"] if "dicom_seg" in formats else []
    write_json_atomic(summary, {"cases": written, "label_tables": [str(p) for p in tables], "skipped": skipped})
    return summary
