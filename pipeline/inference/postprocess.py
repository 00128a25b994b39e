"""Largest-connected-component postprocessing, and the rule that decides where it applies.

The decision follows nnU-Net: on held-out predictions, first try keeping only the largest component
of *all foreground together*; keep that step only if the mean Dice rises and no class's Dice drops.
Then, on top, try it for each class alone; keep it for a class whose Dice rises (removing a class's
islands changes no other class). Nothing is decided by organ names: a dataset of paired organs
(kidneys) simply never gains from it, so it is never chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pipeline.evaluation.metrics import dice_per_class

FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class PostprocessingDecision:
    """Where to keep the largest component: all foreground together, and/or these class values."""

    foreground: bool
    classes: tuple[int, ...]

    def to_json(self) -> dict:
        return {"largest_component_foreground": self.foreground, "largest_component_classes": list(self.classes)}

    @classmethod
    def from_json(cls, payload: dict) -> PostprocessingDecision:
        return cls(bool(payload["largest_component_foreground"]), tuple(int(v) for v in payload["largest_component_classes"]))


def largest_component_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` reduced to its largest 26-connected component (worked inside its bounding box)."""
    if not mask.any():
        return mask
    box = ndimage.find_objects(mask.view(np.uint8))[0]
    components, count = ndimage.label(mask[box], structure=FULL_CONNECTIVITY[tuple(slice(None) for _ in box)])
    if count <= 1:
        return mask
    largest = int(np.bincount(components.ravel())[1:].argmax()) + 1
    out = np.zeros_like(mask)
    out[box] = components == largest
    return out


def apply_postprocessing(label: np.ndarray, decision: PostprocessingDecision) -> np.ndarray:
    """Apply a decision to a label map: voxels outside the kept components become background."""
    out = label
    if decision.foreground:
        out = np.where(largest_component_mask(label > 0), label, 0).astype(label.dtype)
    for value in decision.classes:
        mask = out == value
        kept = largest_component_mask(mask)
        if kept is not mask:
            out = out.copy() if out is label else out
            out[mask & ~kept] = 0
    return out


def mean_dice_per_class(predictions: list[np.ndarray], truths: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Dice per foreground class, averaged over cases."""
    scores = [dice_per_class(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(t.astype(np.int64)), num_classes)
              for p, t in zip(predictions, truths)]  # fmt: skip
    return torch.stack(scores).double().mean(0).numpy()


def decide_postprocessing(predictions: list[np.ndarray], truths: list[np.ndarray], num_classes: int) -> PostprocessingDecision:
    """The largest-component steps that help on these held-out cases (see the module docstring)."""
    base = mean_dice_per_class(predictions, truths, num_classes)
    everything = PostprocessingDecision(True, ())
    fg = mean_dice_per_class([apply_postprocessing(p, everything) for p in predictions], truths, num_classes)
    use_foreground = bool(fg.mean() > base.mean() and np.all(fg >= base))
    current = fg if use_foreground else base
    start = [apply_postprocessing(p, everything) for p in predictions] if use_foreground else predictions
    classes = []
    for value in range(1, num_classes):
        trial = mean_dice_per_class([apply_postprocessing(p, PostprocessingDecision(False, (value,))) for p in start], truths,
                                    num_classes)  # fmt: skip
        if trial[value - 1] > current[value - 1]:
            classes.append(value)
    return PostprocessingDecision(use_foreground, tuple(classes))
