"""The phantom generator: realistic HU per tissue, geometry, orientation variety, determinism."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from pipeline.config import SynthSettings
from pipeline.data.phantom import generate_phantom_dataset, make_case_specs, orientation_matrix, render_case
from tests.conftest import tiny_synth_settings


def _load_training(root):
    meta = json.loads((root / "dataset.json").read_text())
    for entry in meta["training"]:
        yield nib.load(root / entry["image"]), nib.load(root / entry["label"])


def test_dataset_json_lists_every_split_with_msd_keys(tiny_phantom):
    meta = json.loads((tiny_phantom / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}
    assert meta["modality"] == {"0": "CT"}
    assert (len(meta["training"]), len(meta["test"]), len(meta["unlabeled"])) == (4, 1, 2)
    for rel in [e["image"] for e in meta["training"]] + meta["test"] + meta["unlabeled"]:
        assert (tiny_phantom / rel).is_file()
    assert (tiny_phantom / "labelsTs" / "phantom_test_000.nii.gz").is_file()


def test_tissues_have_real_ct_values(tiny_phantom):
    spec = make_case_specs(tiny_synth_settings(tiny_phantom))["train"][0]
    image, label, _ = render_case(spec, 20.0)
    medians = {v: np.median(image[label == v]) for v in (1, 2, 3)}
    assert 80 <= medians[1] <= 125  # liver, portal-venous
    assert 85 <= medians[2] <= 140  # spleen: close to liver
    assert abs(medians[2] - medians[1]) < 30
    assert 120 <= medians[3] <= 200  # enhancing kidney
    assert image.dtype == np.int16
    assert image.min() >= -1024 and np.percentile(image, 5) < -900  # air around the body
    assert image.max() > 400  # bone
    body = image[(image > -400) & (label == 0)]
    assert np.mean((body > -150) & (body < -50)) > 0.05  # subcutaneous/visceral fat


def test_label_and_image_geometry_identical_on_disk(tiny_phantom):
    for image, label in _load_training(tiny_phantom):
        assert image.shape == label.shape
        np.testing.assert_array_equal(image.affine, label.affine)
        assert label.get_data_dtype() == np.uint8
        assert set(np.unique(np.asanyarray(label.dataobj))) == {0, 1, 2, 3}


def test_orientations_vary_and_include_oblique(tiny_phantom):
    codes = {nib.aff2axcodes(image.affine) for image, _ in _load_training(tiny_phantom)}
    assert len(codes) >= 3
    direction_sets = [image.affine[:3, :3] / image.header.get_zooms()[:3] for image, _ in _load_training(tiny_phantom)]
    assert any(np.abs(d).max() < 0.999 for d in direction_sets), "no oblique case"


def test_liver_on_patient_right_spleen_on_left_in_every_orientation(tiny_phantom):
    for image, label in _load_training(tiny_phantom):
        data = np.asanyarray(label.dataobj)
        for value, sign in ((1, 1), (2, -1)):
            ijk = np.argwhere(data == value)
            world_x = (ijk @ image.affine[:3, :3].T + image.affine[:3, 3])[:, 0]
            assert np.mean(world_x) * sign > 20  # RAS+: liver at +x (right), spleen at -x (left)


def test_spacing_anisotropic_within_configured_ranges():
    settings = SynthSettings()
    for spec in make_case_specs(settings)["train"]:
        assert 1.25 <= spec.spacing[0] == spec.spacing[1] <= 1.45
        assert 3.0 <= spec.spacing[2] <= 5.0
        assert 40 <= spec.shape[2] <= 80
        fov = spec.spacing[0] * spec.shape[0]
        assert 300 <= fov <= 380


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = generate_phantom_dataset(tiny_synth_settings(tmp_path / "a", n_labeled=2, n_test=0, n_unlabeled=0))
    b = generate_phantom_dataset(tiny_synth_settings(tmp_path / "b", n_labeled=2, n_test=0, n_unlabeled=0))
    c = generate_phantom_dataset(tiny_synth_settings(tmp_path / "c", n_labeled=2, n_test=0, n_unlabeled=0, seed=99))
    name = "imagesTr/phantom_001.nii.gz"
    data = {k: nib.load(p.parent / name) for k, p in (("a", a), ("b", b), ("c", c))}
    np.testing.assert_array_equal(np.asanyarray(data["a"].dataobj), np.asanyarray(data["b"].dataobj))
    np.testing.assert_array_equal(data["a"].affine, data["b"].affine)
    assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes()
    assert not np.array_equal(np.asanyarray(data["a"].dataobj), np.asanyarray(data["c"].dataobj))


@pytest.mark.parametrize("code", ["RAS", "LPS", "LAS"])
def test_orientation_matrix_matches_nibabel_axcodes(code):
    affine = np.eye(4)
    affine[:3, :3] = orientation_matrix(code)
    assert "".join(nib.aff2axcodes(affine)) == code


def test_oblique_matrix_is_a_rotation_of_the_requested_angle():
    oblique = orientation_matrix("oblique", 20.0)
    np.testing.assert_allclose(oblique.T @ oblique, np.eye(3), atol=1e-12)
    relative = oblique @ orientation_matrix("LPS").T
    angle = np.degrees(np.arccos((np.trace(relative) - 1) / 2))
    assert angle == pytest.approx(20.0)


_RENDER_DIGEST = """
import hashlib
from pathlib import Path
import numpy as np
from pipeline.data.mr_phantom import mr_case_specs, render_mr_case
from pipeline.data.phantom import _displacement, _world_coordinates, case_affine, make_case_specs, render_case
from tests.conftest import tiny_synth_settings
settings = tiny_synth_settings(Path("unused"), n_labeled=2, n_test=0, n_unlabeled=0)
digest = hashlib.sha256()
for spec in make_case_specs(settings)["train"]:
    for array in render_case(spec, 20.0):
        digest.update(array.tobytes())
    rng = np.random.default_rng(spec.seed)  # the float field before rounding to HU: a last-bit change shows here
    world = _world_coordinates(case_affine(spec, rng, 20.0), spec.shape)
    digest.update(_displacement(world, rng).tobytes())
for spec in mr_case_specs(settings)["train"][:1]:
    for array in render_mr_case(spec, 20.0):
        digest.update(array.tobytes())
print(digest.hexdigest())
"""


def _kernel_choices() -> dict[str, dict[str, str]]:
    """Environments that make NumPy and its OpenBLAS pick other kernels on this CPU (only ones it can run)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    choices = {"default": {}, "OpenBLAS Nehalem (SSE)": {"OPENBLAS_CORETYPE": "Nehalem"}}
    if __cpu_features__.get("AVX2") and __cpu_features__.get("FMA3"):
        choices["OpenBLAS Haswell (AVX2)"] = {"OPENBLAS_CORETYPE": "Haswell"}
    if __cpu_features__.get("AVX512_SKX"):  # the kernel whose sums differed (an Intel Xeon's)
        choices["OpenBLAS SkylakeX (AVX-512)"] = {"OPENBLAS_CORETYPE": "SkylakeX"}
    wide = [name for name in __cpu_dispatch__ if name != "X86_V3" and __cpu_features__.get(name)]
    if wide and __cpu_features__.get("X86_V3"):
        choices["NumPy SIMD at AVX2"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(wide)}
    return choices


def test_phantoms_have_the_same_bits_whichever_kernels_numpy_and_openblas_pick():
    """The committed dvc.lock holds the phantom's hash: a machine whose OpenBLAS picks another kernel must draw the
    same bytes (the displacement once went through ``@`` and differed between OpenBLAS's Haswell and SkylakeX)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    digests = {}
    for name, env in _kernel_choices().items():
        result = subprocess.run([sys.executable, "-c", _RENDER_DIGEST], cwd=root, env={**os.environ, **env},
                                capture_output=True, text=True, check=True)  # fmt: skip
        digests[name] = result.stdout.strip()
    assert len(digests) >= 2
    assert len(set(digests.values())) == 1, digests
