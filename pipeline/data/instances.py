"""Instances (boxes, classes, masks) from an instance-id map and a class map: the one rule that training targets,
evaluation's ground truth and the VOC reader share.

An instance is the set of pixels with one id > 0 (VOC's ``SegmentationObject``; void 255 is not an
instance); its class is the most frequent class of ``SegmentationClass`` under it (background and void
excluded; a VOC object lies on one class, so this only matters at JPEG-blurred or augmented edges).
Its box is ``(a0_min, a1_min, a0_max + 1, a1_max + 1)`` in the arrays' axis order: pixel ``i`` covers
``[i, i + 1)``, so a one-pixel instance has a box of size 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Instances:
    """The objects of one image: boxes (N, 4) float32, classes (N,) int64 (1..K-1), masks (N, A0, A1) bool."""

    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Instances:
        return Instances(self.boxes.to(device), self.labels.to(device), self.masks.to(device))


def instances_from_maps(instance_map: torch.Tensor, class_map: torch.Tensor, void: int = 255) -> Instances:
    """Split ``instance_map`` (A0, A1) into instances, classed by ``class_map`` (A0, A1).

    Ids 0 and ``void`` are not instances; an instance whose pixels carry no class other than background/void
    is dropped (it cannot be scored).
    """
    ids = [int(i) for i in torch.unique(instance_map).tolist() if i not in (0, void)]
    boxes, labels, masks = [], [], []
    for index in ids:
        mask = instance_map == index
        classes = class_map[mask]
        classes = classes[(classes > 0) & (classes != void)]
        if classes.numel() == 0:
            continue
        a0 = mask.any(1).nonzero().flatten()
        a1 = mask.any(0).nonzero().flatten()
        boxes.append(torch.tensor([a0[0], a1[0], a0[-1] + 1, a1[-1] + 1], dtype=torch.float32))
        labels.append(int(torch.mode(classes.long()).values))
        masks.append(mask)
    if not boxes:
        shape = tuple(instance_map.shape)
        return Instances(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros((0, *shape), dtype=torch.bool))
    return Instances(torch.stack(boxes), torch.tensor(labels, dtype=torch.int64), torch.stack(masks))


def semantic_from_instances(instances: Instances, scores: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A class map (A0, A1) from instance masks: each pixel takes the class of its highest-scoring mask (0 elsewhere)."""
    classes = torch.zeros(shape, dtype=torch.int64)
    for index in torch.argsort(scores).tolist():  # ascending: the highest score is painted last
        classes[instances.masks[index].cpu()] = int(instances.labels[index])
    return classes
