"""Viewer files read back by independent readers: slicerio (.seg.nrrd), the Slicer colour table, ITK-SNAP labels."""

from __future__ import annotations

import re

import numpy as np
import pytest
import slicerio

from pipeline.data.labels import LabelRegistry
from pipeline.export.itksnap import write_itksnap_labels
from pipeline.export.slicer import RAS_TO_LPS, write_color_table, write_seg_nrrd
from tests.inference.oracle import oblique_lps_affine

REGISTRY = LabelRegistry.from_mapping({0: "background", 1: "liver", 2: "spleen", 3: "kidney", 5: "tumour core"})


def _label_map():
    label = np.zeros((10, 8, 6), dtype=np.uint8)
    label[1:4, 1:3, 0:2] = 1
    label[5:9, 4:7, 2:5] = 2
    label[0, 7, 5] = 5  # kidney (3) absent on purpose
    return label


def test_seg_nrrd_has_segments_colours_values_and_the_scan_geometry(tmp_path):
    label, affine = _label_map(), oblique_lps_affine()
    path = tmp_path / "case.seg.nrrd"
    write_seg_nrrd(path, label, affine, REGISTRY)
    seg = slicerio.read_segmentation(str(path))
    assert np.array_equal(seg["voxels"], label)
    assert np.allclose(seg["ijkToLPS"], RAS_TO_LPS @ affine, atol=1e-6)
    segments = {s["name"]: s for s in seg["segments"]}
    assert list(segments) == ["liver", "spleen", "kidney", "tumour core"]
    assert [s["labelValue"] for s in seg["segments"]] == [1, 2, 3, 5]
    assert np.allclose(segments["liver"]["color"], np.array([221, 130, 101]) / 255, atol=1e-6)
    assert segments["liver"]["extent"] == [1, 3, 1, 2, 0, 1]
    assert segments["kidney"]["extent"] == [0, -1, 0, -1, 0, -1]
    assert segments["liver"]["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
    assert segments["liver"]["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    assert segments["tumour core"]["terminology"]["type"] == ["SCT", "85756007", "Tissue"]
    assert seg["masterRepresentation"] == "Binary labelmap"


def test_seg_nrrd_bytes_do_not_depend_on_when_it_was_written(tmp_path, monkeypatch):
    import datetime as real_datetime

    import nrrd.writer

    class Clock:
        moment = real_datetime.datetime(2020, 1, 1, 0, 0, 0)

        @classmethod
        def utcnow(cls):
            return cls.moment

    monkeypatch.setattr(nrrd.writer, "datetime", Clock)
    label, affine = _label_map(), oblique_lps_affine()
    write_seg_nrrd(tmp_path / "first.seg.nrrd", label, affine, REGISTRY)
    Clock.moment = real_datetime.datetime(2031, 7, 9, 13, 14, 15)
    write_seg_nrrd(tmp_path / "second.seg.nrrd", label, affine, REGISTRY)
    first, second = (tmp_path / "first.seg.nrrd").read_bytes(), (tmp_path / "second.seg.nrrd").read_bytes()
    assert first == second
    assert b"(GMT)" not in first
    assert np.array_equal(slicerio.read_segmentation(str(tmp_path / "second.seg.nrrd"))["voxels"], label)


def test_seg_nrrd_refuses_undeclared_values(tmp_path):
    label = _label_map()
    label[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"\[9\]"):
        write_seg_nrrd(tmp_path / "bad.seg.nrrd", label, np.eye(4), REGISTRY)
    assert not list(tmp_path.iterdir())


def test_slicer_colour_table_rows(tmp_path):
    path = tmp_path / "labels.ctbl"
    write_color_table(path, REGISTRY)
    rows = [line.split() for line in path.read_text().splitlines() if not line.startswith("#")]
    assert rows[0] == ["0", "background", "0", "0", "0", "0"]
    assert rows[1] == ["1", "liver", "221", "130", "101", "255"]
    assert rows[-1][:2] == ["5", "tumour_core"] and len(rows) == 5


def test_itksnap_label_file_parses(tmp_path):
    path = tmp_path / "itksnap_labels.txt"
    write_itksnap_labels(path, REGISTRY)
    pattern = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([01])\s+([01])\s+"([^"]*)"$')
    rows = [pattern.match(line).groups() for line in path.read_text().splitlines() if not line.startswith("#")]
    assert rows[0] == ("0", "0", "0", "0", "0.00", "0", "0", "Clear Label")
    assert rows[1] == ("1", "221", "130", "101", "1.00", "1", "1", "liver")
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "5"] and rows[-1][-1] == "tumour core"
