"""Pooling and kernels per axis (nnU-Net's rule), checked against topologies worked out by hand."""

from __future__ import annotations

from pipeline.planning.topology import pad_to_multiple, plan_topology


def test_isotropic_patch_pools_every_axis_until_the_bottleneck_edge_is_four():
    topology = plan_topology((1.0, 1.0, 1.0), (64, 64, 64))
    # 64 -> 32 -> 16 -> 8 -> 4: four poolings on every axis, 3-wide kernels everywhere
    assert topology.pools == ((1, 1, 1),) + ((2, 2, 2),) * 4
    assert topology.kernels == ((3, 3, 3),) * 5
    assert topology.divisor == (16, 16, 16) and topology.patch_size == (64, 64, 64)


def test_thick_slices_are_not_pooled_and_get_in_plane_kernels_until_the_spacings_even_out():
    # by hand, spacing (0.7, 0.7, 4.4), patch (256, 256, 16):
    #  stage 1: z is 6.3x coarser -> pool x, y; kernel (3, 3, 1)         -> spacing (1.4, 1.4, 4.4), size (128, 128, 16)
    #  stage 2: z 3.1x coarser -> pool x, y; kernel (3, 3, 1)            -> (2.8, 2.8, 4.4), (64, 64, 16)
    #  stage 3: z 1.6x -> pool all; z kernel becomes 3                    -> (5.6, 5.6, 8.8), (32, 32, 8)
    #  stage 4: pool all                                                  -> (11.2, 11.2, 17.6), (16, 16, 4)
    #  stage 5-6: z has 4 voxels (< 2 x 4): pool x, y only               -> (4, 4, 4) in x, y: stop
    topology = plan_topology((0.7, 0.7, 4.4), (256, 256, 16))
    assert topology.pools == ((1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 1))
    assert topology.kernels == ((3, 3, 1), (3, 3, 1), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
    assert topology.divisor == (64, 64, 4)


def test_a_thin_slab_is_never_pooled_along_its_short_axis():
    topology = plan_topology((1.0, 1.0, 1.0), (128, 128, 6))
    assert all(pool[2] == 1 for pool in topology.pools)
    assert topology.patch_size == (128, 128, 6) and topology.divisor == (32, 32, 1)


def test_patch_is_padded_up_to_the_pooling_and_stages_can_be_capped():
    assert pad_to_multiple((40, 30, 17), (8, 8, 4)) == (40, 32, 20)
    assert plan_topology((1.0, 1.0, 1.0), (40, 40, 30)).patch_size == (40, 40, 32)
    capped = plan_topology((1.0, 1.0, 1.0), (64, 64, 64), max_stages=3)
    assert capped.num_stages == 3 and capped.divisor == (4, 4, 4)
