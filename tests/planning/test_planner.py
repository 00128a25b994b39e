"""The planner's rules (nnU-Net v2's) on synthetic fingerprints, with the expected plans worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.planning.memory import estimate_activation_mb
from pipeline.planning.planner import PlanningInput, fullres_spacing, make_plans, network_widths
from pipeline.planning.plans import read_plans, write_plans
from pipeline.planning.profiles import get_profile
from pipeline.planning.resolve import apply_plan

LABELS = {"0": "background", "1": "a", "2": "b"}
CT = {"mean": 50.0, "std": 20.0, "percentile_low": -50.0, "percentile_high": 150.0}


def _data(spacings, shapes, modality="CT", n=None):
    spacings = np.array(spacings, dtype=float)
    shapes = np.array(shapes, dtype=float)
    if n is not None:
        spacings, shapes = np.tile(spacings, (n, 1)), np.tile(shapes, (n, 1))
    return PlanningInput("test", (modality,), LABELS, spacings, shapes, CT if modality == "CT" else None)


def test_isotropic_one_millimetre_keeps_the_median_and_plans_no_lowres_when_the_patch_covers_the_image():
    plans = make_plans(_data([1.0, 1.0, 1.0], [48, 48, 48], n=10), get_profile("cpu"))
    assert plans.fullres_spacing == (1.0, 1.0, 1.0) and plans.anisotropic_axis is None
    full = plans.configurations["3d_fullres"]
    # 48^3 fits the CPU budget at batch 2: the patch is the median image (48 = 3 x 16: pooled 3 times per axis)
    assert full.patch_size == (48, 48, 48) and full.pools[1:] == ((2, 2, 2),) * 3
    assert "3d_lowres" not in plans.configurations and plans.default_3d == "3d_fullres"
    assert full.widths == network_widths(4, 8, 64) == (8, 16, 32, 64)


def test_thick_slices_take_the_tenth_percentile_and_the_coarse_axis_is_pooled_late():
    z = [4.0, 5.0, 5.0, 5.0, 6.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    spacings = [[0.7, 0.7, s] for s in z]
    shapes = [[512, 512, 30]] * 10
    target, axis = fullres_spacing(np.array(spacings), np.array(shapes))
    # 5 mm > 3 x 0.7 mm and 30 x 3 < 512 voxels: z takes the 10th percentile of its spacings, 4.9
    assert axis == 2 and target[2] == pytest.approx(np.percentile(z, 10)) == pytest.approx(4.9)
    assert target[:2] == pytest.approx([0.7, 0.7])
    plans = make_plans(_data(spacings, shapes), get_profile("gpu24"))
    full = plans.configurations["3d_fullres"]
    assert full.kernels[0] == (3, 3, 1) and full.pools[1] == (2, 2, 1)  # in-plane first, as nnU-Net
    assert full.patch_size[0] >= 4 * full.patch_size[2]


def test_not_anisotropic_when_the_coarse_axis_still_has_many_voxels():
    target, axis = fullres_spacing(np.array([[0.7, 0.7, 5.0]] * 4), np.array([[100, 100, 300]] * 4))
    assert axis is None and target.tolist() == pytest.approx([0.7, 0.7, 5.0])


def test_three_tiny_cases_cap_the_batch_at_five_percent_of_the_dataset_but_never_below_two():
    plans = make_plans(_data([1.0, 1.0, 1.0], [40, 40, 30], n=3), get_profile("cpu"))
    full = plans.configurations["3d_fullres"]
    assert full.patch_size == (40, 40, 32)  # the whole image, padded to the pooling (8 per axis)
    # the budget alone holds many samples, but 5 % of 3 x 40 x 40 x 30 voxels is 0.14 patches: the floor of 2 wins
    assert 362 / full.estimated_activation_mb > 5 and full.batch_size == 2


def test_a_step_that_uses_part_of_the_budget_trains_more_steps_up_to_four_times_and_validates_as_often():
    cpu = get_profile("cpu")
    tiny = make_plans(_data([1.0, 1.0, 1.0], [40, 40, 30], n=3), cpu).configurations["3d_fullres"]
    # batch 2 (the 5 % floor) x 31.3 MiB is 62.5 of the 362 MiB budget: 5.8x, capped at 4x
    assert tiny.batch_size == 2 and 362 / (2 * tiny.estimated_activation_mb) > 4
    assert (tiny.max_epochs, tiny.val_every, tiny.iterations_per_epoch) == (4 * 11, 4 * 2, 25)
    small = make_plans(_data([1.0, 1.0, 1.0], [48, 48, 48], n=10), cpu).configurations["3d_fullres"]
    scale = 362 / (2 * small.estimated_activation_mb)  # 2.68x
    assert 2 < scale < 3 and (small.max_epochs, small.val_every) == (int(11 * scale), int(2 * scale)) == (29, 5)
    # a batch that fills the budget keeps the profile's steps: 41 x 9.74 MiB of 400
    full = make_plans(_data([0.8, 0.8, 0.8], [300, 300, 300], n=10), cpu).configurations["2d"]
    assert 400 / (full.batch_size * full.estimated_activation_mb) < 1.01 and (full.max_epochs, full.val_every) == (14, 4)
    # GPU profiles train nnU-Net's 250 x 1000 steps whatever the step uses
    gpu = make_plans(_data([1.0, 1.0, 1.0], [40, 40, 30], n=3), get_profile("gpu24")).configurations["3d_fullres"]
    assert (gpu.max_epochs, gpu.val_every) == (1000, 50)


def test_more_classes_than_the_profiles_three_train_proportionally_more_steps_within_the_cap():
    cpu = get_profile("cpu")
    eight = {"0": "background", **{str(k): f"organ{k}" for k in range(1, 9)}}

    def plan(labels, shapes, n, profile=cpu):
        data = _data([0.8, 0.8, 0.8], shapes, n=n)
        return make_plans(PlanningInput("test", ("CT",), labels, data.spacings, data.shapes_after_crop, CT), profile)

    # a batch that fills the 2D budget (40 x 9.888 MiB of 400: 1.011x): 14 epochs x 1.011 x 8 / 3 classes = 37.7 -> 37,
    # validation every 4 x 2.697 = 10.8 -> 10
    full = plan(eight, [300, 300, 300], 10).configurations["2d"]
    assert full.batch_size == 40 and 400 / (full.batch_size * full.estimated_activation_mb) < 1.012
    assert (full.max_epochs, full.val_every) == (37, 10)
    # three classes or fewer keep the profile's steps (the CT phantom's plan does not change)
    assert plan(LABELS, [300, 300, 300], 10).configurations["2d"].max_epochs == 14
    # with the under-used step's 4x the product is capped at 4x: 11 x 4 epochs
    assert plan(eight, [40, 40, 30], 3).configurations["3d_fullres"].max_epochs == 44
    # GPU profiles keep nnU-Net's steps
    assert plan(eight, [300, 300, 300], 10, get_profile("gpu24")).configurations["2d"].max_epochs == 1000


def test_thin_slabs_plan_a_two_d_like_three_d_patch():
    plans = make_plans(_data([0.8, 0.8, 0.8], [300, 300, 5], n=20), get_profile("gpu24"))
    full = plans.configurations["3d_fullres"]
    # five slices: never pooled along z (5 < 2 x 4), the whole slab in every patch
    assert full.patch_size[2] == 5 and all(p[2] == 1 for p in full.pools)
    assert full.patch_size[:2] == (256, 256)  # the initial 256^3-voxel patch (isotropic: 256 per axis) fits the budget
    assert min(plans.configurations["2d"].patch_size) >= 300  # 2D starts at 2048^2: the whole median slice


def test_the_cpu_budget_creates_a_lowres_configuration_whose_patch_covers_half_of_the_image():
    plans = make_plans(_data([0.8, 0.8, 0.8], [300, 300, 300], n=10), get_profile("cpu"))
    low = plans.configurations["3d_lowres"]
    assert np.prod(plans.configurations["3d_fullres"].patch_size) / 300**3 < 0.5
    assert np.prod(low.patch_size) / np.prod(low.median_shape) >= 0.5  # the CPU profile's coverage (nnU-Net: 0.25)
    assert low.spacing[0] > 0.8 and low.data_identifier == "lowres" and plans.default_3d == "3d_lowres"
    # on the CPU profile the 2D network trains on the same coarser grid; on a GPU profile at full resolution
    assert plans.configurations["2d"].data_identifier == "lowres" and plans.configurations["2d"].spacing == low.spacing
    gpu = make_plans(_data([0.8, 0.8, 0.8], [300, 300, 300], n=10), get_profile("gpu24"))
    assert gpu.configurations["2d"].data_identifier == "fullres" and gpu.configurations["2d"].spacing == (0.8, 0.8, 0.8)


def test_mr_is_z_scored_in_a_foreground_mask_and_ct_by_dataset_statistics():
    mr = make_plans(_data([1.0, 1.0, 1.0], [48, 48, 48], modality="MR", n=4), get_profile("cpu"))
    assert [(n.scheme, n.mask, n.bias_correction) for n in mr.normalisation] == [("zscore", "foreground", "n4")]
    ct = make_plans(_data([1.0, 1.0, 1.0], [48, 48, 48], n=4), get_profile("cpu"))
    assert ct.normalisation[0].scheme == "ct" and ct.normalisation[0].mean == 50.0
    assert ct.normalisation[0].bias_correction == "none"
    plain = make_plans(_data([1.0, 1.0, 1.0], [48, 48, 48], modality="MR", n=4), get_profile("cpu"), "none")
    assert plain.normalisation[0].bias_correction == "none"


def test_activation_estimate_counts_every_layer_output_of_our_network():
    # U-Net widths (2, 4) on 8 x 8, one input channel, two classes, by hand (values per layer output):
    # level 0: (conv, bn, relu) x 2 at 2 x 64 = 768; level 1 at 4 x 16: 384; up-conv 2 x 64 = 128;
    # decoder double conv 768; head 2 x 64 = 128  -> 2176 values of 4 bytes
    pools, kernels = ((1, 1), (2, 2)), ((3, 3), (3, 3))
    assert estimate_activation_mb(2, 1, 2, (8, 8), (2, 4), pools, kernels) == pytest.approx(2176 * 4 / 2**20)


def test_a_training_config_takes_the_plan_and_records_explicit_overrides(tmp_path):
    plans = make_plans(_data([1.0, 1.0, 1.0], [48, 48, 48], n=10), get_profile("cpu"))
    path = write_plans(plans, tmp_path / "plans.json")
    assert read_plans(path) == plans
    raw = {
        "plan": {"file": str(path), "configuration": "3d"},
        "preprocess": {"out_dir": str(tmp_path / "pre")},
        "model": {"name": "vnet3d", "norm": "instance"},
        "train": {"batch_size": 3},
    }
    resolved, overrides = apply_plan(PipelineConfig.model_validate(raw))
    full = plans.configurations["3d_fullres"]
    assert resolved.train.patch_size == full.patch_size and resolved.model.widths == full.widths
    assert resolved.model.pools == full.pools and resolved.model.convs == (1, 2, 2, 2)
    assert resolved.train.max_epochs == full.max_epochs and resolved.train.batch_size == 3
    assert overrides == {"train.batch_size": f"3 (planned {full.batch_size})"}
    assert resolved.preprocess.out_dir == tmp_path / "pre" / "fullres"
    with pytest.raises(ConfigError, match="3D"):
        apply_plan(PipelineConfig.model_validate({**raw, "model": {"name": "unet2d"}}))
    assert json.loads(path.read_text())["configurations"]["3d_fullres"]["patch_size"] == list(full.patch_size)


def test_2d_slices_across_the_coarsest_axis_and_its_patch_spans_the_other_two():
    # thick sagittal slices: 4 mm along x, 0.8 mm in the (y, z) plane, 40 x 256 x 200 voxels
    plans = make_plans(_data([4.0, 0.8, 0.8], [40, 256, 200], n=12), get_profile("gpu24"))
    two_d = plans.configurations["2d"]
    assert plans.anisotropic_axis == 0 and two_d.slice_axis == 0
    assert two_d.median_shape == (256, 200)  # the (y, z) plane, in that order
    assert two_d.patch_size[0] >= two_d.patch_size[1] and max(two_d.patch_size) <= 256
    # axial, isotropic and tied grids slice across z, as before
    for spacing, shape in (([0.7, 0.7, 5.0], [512, 512, 30]), ([1.0, 1.0, 1.0], [48, 48, 48]), ([2.0, 1.0, 2.0], [40, 80, 40])):
        assert make_plans(_data(spacing, shape, n=10), get_profile("gpu24")).configurations["2d"].slice_axis == 2


def test_the_planned_slice_axis_reaches_the_2d_models_and_an_explicit_one_is_recorded(tmp_path):
    plans = make_plans(_data([4.0, 0.8, 0.8], [40, 256, 200], n=12), get_profile("cpu"))
    write_plans(plans, tmp_path / "plans.json")
    base = {"plan": {"file": str(tmp_path / "plans.json"), "configuration": "2d"}}
    cfg, overrides = apply_plan(PipelineConfig.model_validate({**base, "model": {"name": "unet2d"}}))
    assert cfg.model.slice_axis == 0 and overrides == {}
    pretrain = {"name": "autoencoder", "encoder": "unet2d"}
    assert apply_plan(PipelineConfig.model_validate({**base, "model": pretrain}))[0].model.slice_axis == 0
    cfg, overrides = apply_plan(PipelineConfig.model_validate({**base, "model": {"name": "unet2d", "slice_axis": 2}}))
    assert cfg.model.slice_axis == 2 and overrides["model.slice_axis"] == "2 (planned 0)"


def test_the_printed_plan_gives_the_bias_probes_evidence_per_channel():
    from pipeline.planning.plans import BiasProbe
    from pipeline.planning.run import describe_plans

    plans = make_plans(_data([1.0, 1.0, 1.0], [48, 48, 48], modality="MR", n=4), get_profile("cpu"), "none")
    plans = plans.model_copy(update={"bias_probe": (BiasProbe(channel="MR", cases=4, none=1.989, n4=0.0131),)})
    lines = describe_plans(plans).splitlines()
    assert lines[-1] == "  bias probe, channel 0 MR (4 labelled cases): class separation 1.989 without N4, 0.0131 with it"
    assert "bias probe" not in describe_plans(make_plans(_data([1.0, 1.0, 1.0], [48, 48, 48], n=4), get_profile("cpu")))
