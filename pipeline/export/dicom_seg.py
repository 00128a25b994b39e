"""DICOM Segmentation (highdicom) for a mask predicted on a DICOM series.

BINARY, uncompressed (explicit VR little endian), one segment per foreground label of the registry
with its SNOMED CT category and type, algorithm identification (segpipe, its version and the
models), frames aligned to the source slices and referencing the source series, study, patient
and frame of reference. Patient and study attributes come from the source images only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.labels import LabelRegistry
from pipeline.export.terminology import coding_for
from pipeline.io_utils import atomic_path

SOFTWARE = "segpipe"


def write_dicom_seg(
    path: Path,
    label_map: np.ndarray,
    source_files: tuple[Path, ...],
    registry: LabelRegistry,
    algorithm_version: str,
    model_names: tuple[str, ...],
) -> None:
    """Write ``label_map`` (x=column, y=row, z=slice in ``source_files`` order) as a DICOM SEG, atomically.

    Args:
        path: output ``.dcm`` file.
        label_map: integer labels on the source series' grid (as read by ``read_dicom_series``).
        source_files: the series' files, sorted as the label map's third axis.
        registry: the label registry (segment names, colours, codes).
        algorithm_version: segpipe version written in the algorithm identification.
        model_names: the ensemble's model names (algorithm parameters).

    Raises:
        ValueError: the label map does not match the source slices.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(p) for p in source_files]
    frames = np.ascontiguousarray(np.asarray(label_map).transpose(2, 1, 0))  # (slice, row, column)
    if frames.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        expected = f"{len(sources)} source slices of {sources[0].Rows}x{sources[0].Columns}"
        raise ValueError(f"{path}: mask frames {frames.shape} do not match {expected}")
    foreground = registry.foreground()
    segment_of_value = np.zeros(max(registry.values) + 1, dtype=np.uint8)
    for number, label in enumerate(foreground, start=1):
        segment_of_value[label.value] = number
    algorithm = hd.AlgorithmIdentificationSequence(
        name=SOFTWARE,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version,
        parameters={"models": ",".join(model_names)},
    )
    descriptions = [_segment(number, label, algorithm) for number, label in enumerate(foreground, start=1)]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segment_of_value[frames],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE,
        manufacturer_model_name=SOFTWARE,
        software_versions=algorithm_version,
        device_serial_number="0",
        series_description="segpipe segmentation",
        omit_empty_frames=False,
    )
    with atomic_path(Path(path)) as tmp:
        seg.save_as(tmp)


LONG_STRING_MAX = 64  # DICOM's LO value representation (SegmentLabel): longer names make a non-conformant file


def _segment(number: int, label, algorithm):
    import highdicom as hd
    from pydicom.sr.coding import Code

    coding = coding_for(label)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label.name[:LONG_STRING_MAX],  # a dataset.json name may be longer (region-derived ones often are)
        segmented_property_category=Code(coding.category[0], "SCT", coding.category[1]),
        segmented_property_type=Code(coding.type[0], "SCT", coding.type[1]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*label.color),
    )
