"""Output names (row T8): never a path, never '.' or '..', never shared by two inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import DatasetError, InvalidInputError
from pipeline.inference.sources import discover_scans, read_scan
from tests.conftest import make_volume, save


def test_same_stem_as_nii_and_nii_gz_is_a_collision_listing_both(tmp_path):
    first, second = save(tmp_path / "in" / "same.nii", make_volume()), save(tmp_path / "in" / "same.nii.gz", make_volume())
    with pytest.raises(DatasetError) as collided:
        discover_scans(tmp_path / "in", naming="source")
    assert [p.path for p in collided.value.problems] == [str(first), str(second)]
    assert all(p.code == "T8" and "would be written to the same output 'same'" in p.message for p in collided.value.problems)
    assert not (tmp_path / "out").exists()
    assert len({s.name for s in discover_scans(tmp_path / "in", naming="anonymous")}) == 2  # different bytes
    (tmp_path / "in" / "copy.nii.gz").write_bytes(second.read_bytes())  # the same bytes share a digest name
    with pytest.raises(DatasetError, match="same output 'scan-"):
        discover_scans(tmp_path / "in", naming="anonymous")


def test_a_name_that_would_escape_the_output_folder_is_refused(tmp_path):
    escaping = save(tmp_path / "...nii.gz", make_volume())
    with pytest.raises(DatasetError) as refused:
        discover_scans(escaping, naming="source")
    (problem,) = refused.value.problems
    assert (problem.path, problem.code) == (str(escaping), "T8")
    assert "output name '..' is not a plain folder name" in problem.message
    assert discover_scans(escaping, naming="anonymous")[0].name.startswith("scan-")


def test_a_two_channel_model_reads_a_4d_scan_as_its_channels_and_refuses_a_3d_one_by_name(tmp_path):
    channels = np.stack([make_volume(), make_volume(value=90)], axis=-1)
    (source,) = discover_scans(save(tmp_path / "mp.nii.gz", channels), naming="source")
    scan = read_scan(source, channels=2)
    assert scan.image.shape == (2, 12, 10, 8) and np.array_equal(scan.image[1], channels[..., 1])
    (flat,) = discover_scans(save(tmp_path / "t2.nii.gz", make_volume()), naming="source")
    with pytest.raises(InvalidInputError, match=r"t2.nii.gz.*\[G8\].*\(x, y, z, 2\).*got shape \(12, 10, 8\)"):
        read_scan(flat, channels=2)
    assert read_scan(flat, channels=1).image.shape == (1, 12, 10, 8)
