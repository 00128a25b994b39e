"""Largest-connected-component postprocessing, and the rule that decides where it applies.

The decision follows nnU-Net: on held-out predictions, first try keeping only the largest component
of *all foreground together*; keep that step only if the mean Dice rises and no class's Dice drops.
Then, on top, try it for each class alone; keep it for a class whose Dice rises (removing a class's
islands changes no other class). Nothing is decided by organ names: a dataset of paired organs
(kidneys) simply never gains from it, so it is never chosen.

One more rule, from the training labels, because one fold's one to three held-out cases are little evidence: a step is
only tried for a structure that is one object in every labelled training case (:func:`one_object_structures`: its
largest component holds at least ``ONE_OBJECT_SHARE`` of its voxels). On a two-channel MR set whose three classes lie
apart, the foreground step helped on both held-out cases, where two classes happened to touch, and on the test scans it
deleted whole classes (test Dice 0.796 without it, 0.583 with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pipeline.evaluation.metrics import dice_per_class
from pipeline.parallel import thread_map

ONE_OBJECT_SHARE = 0.95  # a structure is one object when its largest 26-connected component holds this share of it


@dataclass(frozen=True)
class OneObject:
    """Which structures are one connected object in every labelled training case: all foreground together, and these
    class values. Only for those can keeping the largest component be right."""

    foreground: bool
    classes: frozenset[int]

    def to_json(self) -> dict:
        return {"foreground": self.foreground, "classes": sorted(self.classes)}


def one_object_structures(labels, num_classes: int) -> OneObject:
    """The foreground, and each class, whose largest component holds at least ``ONE_OBJECT_SHARE`` of its voxels in
    every label map of ``labels`` (an iterable; a class absent from a map says nothing)."""
    foreground, classes = True, set(range(1, num_classes))
    for label in labels:
        foreground = foreground and largest_component_share(label > 0) >= ONE_OBJECT_SHARE
        classes = {v for v in classes if largest_component_share(label == v) >= ONE_OBJECT_SHARE}
    return OneObject(foreground, frozenset(classes))


def largest_component_share(mask: np.ndarray) -> float:
    """The share of ``mask``'s voxels in its largest 26-connected (8 in 2D) component; 1 for an empty mask."""
    found = _components(mask)
    if found is None:
        return 1.0
    sizes = np.bincount(found[1].ravel(order="K"))[1:]
    return float(sizes.max() / sizes.sum())


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


def apply_postprocessing(label: np.ndarray, decision: PostprocessingDecision) -> np.ndarray:
    """Apply a decision to a label map: voxels outside the kept components become background.

    Each step labels components inside the bounding box of its mask only (a CT-sized mask's organs fill a small part
    of the scan). Components are 26-connected (8 in 2D); of equally large components the one whose first voxel comes
    first in raster order is kept, whatever the memory order. Returns ``label`` itself when nothing is decided, otherwise
    a copy in the same memory order.
    """
    if not decision.foreground and not decision.classes:
        return label
    out = label.copy(order="K")  # keeps a Fortran-ordered mask Fortran-ordered (cheap to write)
    if decision.foreground:
        _keep_largest_component(out, out > 0)
    # the classes side by side (SciPy's labelling releases the GIL): each step reads and clears voxels of its own value
    # only, so the steps do not depend on each other or their order
    thread_map(lambda value: _keep_largest_component(out, out == value), list(decision.classes))
    return out


def _keep_largest_component(label: np.ndarray, mask: np.ndarray) -> None:
    """In place: clear the voxels of ``mask`` outside its largest connected component."""
    found = _components(mask)
    if found is not None:
        box, components = found
        label[box][mask[box] & (components != _largest_component_id(components))] = 0


def _components(mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """``(box, component ids)``: the 26-connected (8 in 2D) components of ``mask``, labelled inside its bounding box;
    ``None`` when ``mask`` has fewer than two components (nothing to remove, all of it in one)."""
    box = _bounding_box(mask)
    if box is None:
        return None
    mask = mask[box]
    along_memory = mask.strides[0] < mask.strides[-1]  # Fortran-like (a restored mask): label the transposed view, which
    structure = np.ones((3,) * mask.ndim, dtype=bool)  # runs along memory (2.5x faster); connectivity is symmetric
    components, count = ndimage.label(mask.T if along_memory else mask, structure=structure)
    if count <= 1:
        return None
    return box, components.T if along_memory else components


def _largest_component_id(components: np.ndarray) -> int:
    """The id of the largest component; on a tie, the one whose first voxel in raster (C) order of the axes comes first,
    so the choice does not depend on how the components were numbered or the array is laid out."""
    sizes = np.bincount(components.ravel(order="K"))[1:]
    tied = np.flatnonzero(sizes == sizes.max()) + 1
    if len(tied) == 1:
        return int(tied[0])
    firsts = [int(np.flatnonzero((components == k).ravel(order="C"))[0]) for k in tied]
    return int(tied[int(np.argmin(firsts))])


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every true voxel of ``mask`` (``None`` if there is none); each axis's projection is
    taken inside the range already found on the previous axes (``ndimage.find_objects`` is about 10x slower here)."""
    box = [slice(None)] * mask.ndim
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask[tuple(box)].any(axis=others))
        if hit.size == 0:
            return None
        box[axis] = slice(int(hit[0]), int(hit[-1]) + 1)
    return tuple(box)


def mean_dice_per_class(predictions: list[np.ndarray], truths: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Dice per foreground class, averaged over cases."""
    scores = [dice_per_class(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(t.astype(np.int64)), num_classes)
              for p, t in zip(predictions, truths)]  # fmt: skip
    return torch.stack(scores).double().mean(0).numpy()


def decide_postprocessing(
    predictions: list[np.ndarray], truths: list[np.ndarray], num_classes: int, one_object: OneObject | None = None
) -> PostprocessingDecision:
    """The largest-component steps that help on these held-out cases, tried only for the structures ``one_object``
    names (:func:`one_object_structures` of the training labels; ``None``: every structure). See the module docstring."""
    one_object = one_object or OneObject(True, frozenset(range(1, num_classes)))
    base = mean_dice_per_class(predictions, truths, num_classes)
    everything = PostprocessingDecision(True, ())
    use_foreground, current, start = False, base, predictions
    if one_object.foreground:
        joined = [apply_postprocessing(p, everything) for p in predictions]
        fg = mean_dice_per_class(joined, truths, num_classes)
        if fg.mean() > base.mean() and np.all(fg >= base):
            use_foreground, current, start = True, fg, joined
    classes = []
    for value in sorted(one_object.classes):
        trial = mean_dice_per_class([apply_postprocessing(p, PostprocessingDecision(False, (value,))) for p in start], truths,
                                    num_classes)  # fmt: skip
        if trial[value - 1] > current[value - 1]:
            classes.append(value)
    return PostprocessingDecision(use_foreground, tuple(classes))
