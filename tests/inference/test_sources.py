"""Output names (row T8): never a path, never '.' or '..', never shared by two inputs."""

from __future__ import annotations

import pytest

from pipeline.errors import DatasetError
from pipeline.inference.sources import discover_scans
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
