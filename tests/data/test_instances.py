"""Instances from VOC-style maps (one rule for training targets and evaluation), and the class map painted back."""

from __future__ import annotations

import torch

from pipeline.data.instances import Instances, instances_from_maps, semantic_from_instances


def test_boxes_classes_and_masks_worked_out_by_hand():
    ids = torch.zeros(8, 6, dtype=torch.int64)
    classes = torch.zeros_like(ids)
    ids[1:4, 2:5], classes[1:4, 2:5] = 3, 2  # instance 3 of class 2: a0 1..3, a1 2..4
    ids[6, 0], classes[6, 0] = 1, 4  # a one-pixel instance of class 4
    ids[0, 0] = 255  # void is not an instance
    ids[5, 5] = 7  # an instance on background only: cannot be scored, dropped
    found = instances_from_maps(ids, classes)
    assert found.boxes.tolist() == [[6.0, 0.0, 7.0, 1.0], [1.0, 2.0, 4.0, 5.0]]  # ids in order 1, 3
    assert found.labels.tolist() == [4, 2]
    assert found.masks.shape == (2, 8, 6) and found.masks[1].sum() == 9 and found.masks[0, 6, 0]


def test_class_of_an_instance_is_its_majority_class():
    ids = torch.ones(4, 4, dtype=torch.int64)
    classes = torch.full((4, 4), 2)
    classes[0, :3] = 1  # 3 of 16 pixels blurred into another class
    assert instances_from_maps(ids, classes).labels.tolist() == [2]


def test_no_instances_give_empty_tensors_of_the_right_shape():
    found = instances_from_maps(torch.zeros(5, 7, dtype=torch.int64), torch.zeros(5, 7, dtype=torch.int64))
    assert len(found) == 0 and found.boxes.shape == (0, 4) and found.masks.shape == (0, 5, 7)


def test_painted_class_map_lets_the_higher_score_win_overlaps():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :3, :3] = True
    masks[1, 2:, 2:] = True
    instances = Instances(torch.zeros(2, 4), torch.tensor([1, 3]), masks)
    painted = semantic_from_instances(instances, torch.tensor([0.4, 0.9]), (4, 4))
    assert painted[2, 2] == 3 and painted[0, 0] == 1 and painted[3, 0] == 0
    assert semantic_from_instances(instances, torch.tensor([0.9, 0.4]), (4, 4))[2, 2] == 1
