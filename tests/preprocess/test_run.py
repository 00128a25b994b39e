"""The preprocess stage: outputs, normalisation, resumability, and bad input handled as RELIABILITY.md says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.config import PipelineConfig
from pipeline.errors import DatasetError
from pipeline.io_utils import file_digest
from pipeline.planning.run import plan_dataset
from pipeline.preprocess.intensity import IntensityStats, normalise_ct, normalise_mr
from pipeline.preprocess.run import preprocess_dataset
from tests.conftest import data_config, make_label, make_volume, write_msd


def _cfg(root, out, **preprocess):
    return data_config(root, out, **preprocess)


def _run(cfg):
    plan_dataset(cfg)
    return preprocess_dataset(cfg)


@pytest.fixture(scope="module")
def preprocessed(tiny_phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    manifest = _run(_cfg(tiny_phantom, out, spacing_mm=[8.0, 8.0, 10.0]))
    return manifest.parent, json.loads(manifest.read_text())


def test_manifest_arrays_and_fingerprint(preprocessed):
    out, manifest = preprocessed
    assert [c["split"] for c in manifest["cases"]].count("train") == 4
    assert len(manifest["cases"]) == 7
    assert manifest["labels"] == {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}
    for entry in manifest["cases"]:
        image = np.load(out / entry["image"], mmap_mode="r")
        record = json.loads((out / entry["record"]).read_text())
        assert image.dtype == np.float32 and image.ndim == 4 and image.shape[0] == 1
        assert list(image.shape[1:]) == record["geometry"]["preprocessed_shape"]
        assert np.isfinite(image).all()
        if entry["split"] in ("train", "test"):
            label = np.load(out / entry["label"])
            assert label.dtype == np.uint8 and label.shape == image.shape[1:]
            assert set(np.unique(label)) == {0, 1, 2, 3}
        else:
            assert "label" not in entry
    assert json.loads((out / "fingerprint.json").read_text())["target_spacing"] == [8.0, 8.0, 10.0]
    fingerprint = json.loads((out.parent.with_name(out.parent.name + "_plan") / "fingerprint.json").read_text())
    assert fingerprint["num_cases"] == 4
    assert 80 < fingerprint["intensity"]["mean"] < 140  # foreground is liver/spleen/kidney HU
    assert sum(fingerprint["class_voxel_fraction"].values()) == pytest.approx(1.0)
    assert 5.2 <= fingerprint["median_spacing"][0] <= 5.6


def test_ct_normalisation_zero_mean_unit_scale_on_foreground(preprocessed):
    out, manifest = preprocessed
    values = []
    for entry in manifest["cases"]:
        if entry["split"] == "train":
            image, label = np.load(out / entry["image"])[0], np.load(out / entry["label"])
            values.append(image[label > 0])
    values = np.concatenate(values)
    assert abs(values.mean()) < 0.3 and 0.5 < values.std() < 1.5
    assert values.min() >= (48 - 200) / 10  # clipped at the low percentile, not raw HU


def test_crop_keeps_every_foreground_voxel_and_drops_air(preprocessed, tiny_phantom):
    out, manifest = preprocessed
    record = json.loads((out / manifest["cases"][0]["record"]).read_text())["geometry"]
    crop = np.subtract(record["crop_stop"], record["crop_start"])
    assert (crop[:2] < np.array(record["original_shape"])[:2]).any()  # air around the body is cropped


def test_second_run_skips_unchanged_cases_redoes_changed_ones_and_records_the_files_digests(tiny_phantom, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_phantom, root)
    out = tmp_path / "pre"
    _run(_cfg(root, out, spacing_mm=[8.0, 8.0, 10.0]))
    case_dir = out / "fullres" / "cases" / "phantom_000"
    first = (case_dir / "image.npy").stat().st_mtime_ns
    record = json.loads((case_dir / "record.json").read_text())  # a new case: hashed while it is read (thread_map)
    assert record["source_digests"] == {path: file_digest(Path(path)) for path in record["sources"]}
    _run(_cfg(root, out, spacing_mm=[8.0, 8.0, 10.0]))
    assert (case_dir / "image.npy").stat().st_mtime_ns == first
    source = Path(record["sources"][0])  # a changed source under unchanged settings: hashed first, then redone
    scan = nib.load(source)
    nib.save(nib.Nifti1Image(np.asarray(scan.dataobj) + 1, scan.affine, scan.header), source)
    _run(_cfg(root, out, spacing_mm=[8.0, 8.0, 10.0]))
    redone = json.loads((case_dir / "record.json").read_text())
    assert redone["source_digests"][str(source)] == file_digest(source) != record["source_digests"][str(source)]
    second = (case_dir / "image.npy").stat().st_mtime_ns
    assert second != first
    _run(_cfg(root, out, spacing_mm=[9.0, 9.0, 10.0]))
    assert (case_dir / "image.npy").stat().st_mtime_ns != second


def test_bad_cases_all_reported_and_good_outputs_not_lost(tmp_path):
    nan_image = make_volume().astype(np.float32)
    nan_image[1, 1, 1] = np.nan
    root = write_msd(
        tmp_path / "ds",
        {
            "good": (make_volume(), make_label()),
            "nan": (nan_image, make_label()),
            "odd": (make_volume(), make_label((12, 10, 9))),
        },
    )
    out = tmp_path / "pre"
    with pytest.raises(DatasetError) as err:
        _run(_cfg(root, out))
    text = str(err.value)
    assert "could not read 2 case(s)" in text
    assert str(root / "imagesTr" / "nan.nii.gz") in text and "NaN" in text
    assert str(root / "labelsTr" / "odd.nii.gz") in text and "(12, 10, 9)" in text
    assert not (out / "dataset.json").exists()  # no manifest from a failed run
    assert not list(out.rglob("*.tmp*"))


def test_constant_image_normalises_without_nan():
    stats = IntensityStats(mean=30.0, std=0.0, percentile_low=30.0, percentile_high=30.0)
    cfg = PipelineConfig().preprocess
    out = normalise_ct(np.full((4, 4, 4), 30, dtype=np.int16), stats, cfg)
    assert np.isfinite(out).all() and np.all(out == 0)
    assert np.all(normalise_mr(np.full((4, 4, 4), 5.0)) == 0)


def test_window_normalisation_maps_window_to_unit_interval():
    cfg = PipelineConfig.model_validate({"preprocess": {"ct_normalisation": "window", "ct_window_hu": [-100, 300]}}).preprocess
    out = normalise_ct(np.array([-1000, -100, 100, 300, 2000], dtype=np.int16), None, cfg)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_mr_zscore_over_nonzero_voxels_only():
    volume = np.zeros((4, 4, 4), dtype=np.float32)
    volume[1:3, 1:3, 1:3] = np.arange(8).reshape(2, 2, 2) + 10
    out = normalise_mr(volume)
    inside = out[1:3, 1:3, 1:3]
    assert inside.mean() == pytest.approx(0.0, abs=1e-6) and inside.std() == pytest.approx(1.0, abs=1e-5)
    assert np.all(out[0] == 0)


def _head_scan(fill: float, rng: np.random.Generator, n: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Magnitude MR of a two-tissue 'head' filling ``fill`` of the field of view, Rician background (sigma 20)."""
    radius = (fill * n**3 * 3 / (4 * np.pi)) ** (1 / 3)
    distance = np.sqrt(((np.indices((n, n, n)) - n / 2) ** 2).sum(0))
    truth = np.where(distance < radius, 400.0, 0.0)
    truth[distance < 0.6 * radius] = 250.0
    magnitude = np.hypot(truth + rng.normal(0, 20, truth.shape), rng.normal(0, 20, truth.shape))
    return magnitude, distance < 0.45 * radius, (distance > 0.7 * radius) & (distance < 0.9 * radius)


def test_mr_tissue_normalises_to_the_same_value_whatever_share_of_the_view_the_head_fills():
    rng = np.random.default_rng(0)
    small, small_core, small_shell = _head_scan(0.02, rng)
    large, large_core, large_shell = _head_scan(0.40, rng)
    small_z, large_z = normalise_mr(small), normalise_mr(large)
    for small_mask, large_mask in ((small_core, large_core), (small_shell, large_shell)):
        a, b = small_z[small_mask].mean(), large_z[large_mask].mean()
        assert abs(a - b) <= 0.05 * max(abs(a), abs(b))
    # the z-score over every non-zero voxel (the old rule) fails the same check by far
    from monai.transforms import NormalizeIntensity

    def old(volume):
        return np.asarray(NormalizeIntensity(nonzero=True)(volume.astype(np.float32)))

    assert abs(old(small)[small_core].mean() - old(large)[large_core].mean()) > 1.0


def _biased_head(rng: np.random.Generator, n: int = 64):
    """Two tissues (400 inside 250) times a smooth field that brightens one side by 1.6x: (scan, field, tissue masks)."""
    magnitude, core, shell = _head_scan(0.3, rng, n)
    x = np.indices((n, n, n))[0] / (n - 1)
    field = np.exp(0.47 * x - 0.1 * (x - 0.5) ** 2)
    return magnitude * field, field, core, shell


def test_n4_divides_out_a_smooth_bias_field_so_a_tissue_is_one_value_across_the_scan():
    from pipeline.preprocess.intensity import correct_bias_field, foreground_threshold

    scan, field, core, shell = _biased_head(np.random.default_rng(1))
    mask = scan > foreground_threshold(scan)
    corrected = correct_bias_field(scan, mask, (1.0, 1.0, 1.0))
    left, right = np.zeros_like(core), np.zeros_like(core)
    left[:30], right[34:] = True, True
    for tissue, drift in ((core, 1.08), (shell, 1.18)):  # the true field's ratio over each tissue's halves
        before = scan[tissue & right].mean() / scan[tissue & left].mean()
        after = corrected[tissue & right].mean() / corrected[tissue & left].mean()
        assert before > drift and abs(after - 1) < 0.01
    # the recovered field is the true one up to a global scale (N4 fixes no absolute level)
    ratio = (scan / corrected)[mask] / field[mask]
    assert ratio.std() / ratio.mean() < 0.03
    # inside the z-score: the core of the bright side and of the dark side now normalise alike
    z = normalise_mr(scan, (1.0, 1.0, 1.0), bias_correction=True)
    plain = normalise_mr(scan)
    for tissue in (core, shell):
        assert abs(z[tissue & right].mean() - z[tissue & left].mean()) < 0.05
        assert abs(plain[tissue & right].mean() - plain[tissue & left].mean()) > 0.25


def test_n4_gives_the_same_bits_with_one_thread_or_many_and_leaves_non_positive_channels_alone():
    import SimpleITK as sitk

    from pipeline.preprocess.intensity import correct_bias_field

    scan, _, _, _ = _biased_head(np.random.default_rng(2), n=48)
    mask = scan > 100
    default = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        results = []
        for threads in (1, 4):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
            results.append(correct_bias_field(scan, mask, (1.0, 1.0, 2.0)))
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(default)
    assert np.array_equal(results[0], results[1])
    shifted = scan - 300.0  # values <= 0 inside the mask: N4 (logarithms) does not apply
    assert np.array_equal(correct_bias_field(shifted, mask, (1.0, 1.0, 1.0)), shifted.astype(np.float32))


def test_integer_comparison_with_a_threshold_equals_the_float_comparison():
    from pipeline.preprocess.intensity import above

    values = np.arange(-1030, 1030, dtype=np.int16)
    for threshold in (-500, -500.5, -499.9, 0.0, 3.7, -40000.0, 40000.0, 32767.0, -32768.5):
        assert np.array_equal(above(values, threshold), values.astype(np.float64) > threshold), threshold
        assert np.array_equal(above(values.astype(np.float32), threshold), values > threshold), threshold


def test_mr_normalisation_mask_none_z_scores_every_voxel_and_crops_nothing(tmp_path):
    rng = np.random.default_rng(3)
    cases = {}
    for i in range(3):
        scan, core, _ = _head_scan(0.1, rng, n=24)
        cases[f"mr_{i}"] = (scan.astype(np.float32), core.astype(np.uint8))
    root = write_msd(tmp_path / "mr", cases, affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps(meta | {"modality": {"0": "MR"}, "labels": {"0": "background", "1": "core"}}))
    masked = _run(_cfg(root, tmp_path / "masked"))
    whole = _run(_cfg(root, tmp_path / "whole", mr_normalisation_mask="none", mr_bias_correction="n4"))
    plans = json.loads((tmp_path / "whole_plan" / "plans.json").read_text())
    assert [(n["mask"], n["bias_correction"]) for n in plans["normalisation"]] == [("none", "none")]  # N4 needs the mask
    assert plans["overrides"] == {"preprocess.mr_bias_correction": "n4", "preprocess.mr_normalisation_mask": "none"}
    default = json.loads((tmp_path / "masked_plan" / "plans.json").read_text())
    assert default["normalisation"][0]["mask"] == "foreground" and default["overrides"] == {}
    for manifest, cropped in ((masked, True), (whole, False)):
        entry = json.loads(manifest.read_text())["cases"][0]
        image = np.load(manifest.parent / entry["image"])[0]
        scan = cases[entry["case_id"]][0]
        # 2 mm voxels planned at 2 mm: no resampling, so the crop is the only change of shape
        assert (image.shape != scan.shape) == cropped
        if not cropped:  # the z-score over every voxel, worked out directly; nothing zeroed
            np.testing.assert_allclose(image, (scan - scan.mean()) / scan.std(), atol=1e-4)
        else:  # 0 outside the head, the z-score of the head's voxels inside it
            assert (image == 0).mean() > 0.3 and abs(image[image != 0].mean()) < 0.05
