"""COCO-style instance metrics (AP, AP50, AP75 for boxes and masks) with ``pycocotools``, the reference implementation.

Arrays follow the natural track's axis order: a mask is (x, y) and a box ``(x1, y1, x2, y2)`` with
pixel ``i`` covering ``[i, i + 1)``; they are converted to COCO's row-major masks (run-length
encoded) and ``[x, y, width, height]`` boxes here and nowhere else.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from pipeline.data.instances import Instances

METRICS = ("ap", "ap50", "ap75")  # COCOeval.stats[0:3]: AP at IoU .50:.05:.95, at .50 and at .75


@dataclass
class ScoredImage:
    """One image's ground truth and its predictions (masks thresholded, with scores)."""

    truth: Instances
    prediction: Instances
    scores: np.ndarray


def coco_metrics(images: list[ScoredImage], num_classes: int) -> dict[str, float]:
    """``box_ap``, ``box_ap50``, ``box_ap75``, ``mask_ap``, ``mask_ap50``, ``mask_ap75`` over ``images``.

    An image set without ground-truth instances has no AP (NaN); predictions without any ground truth of their
    class count as false positives of that class only where the class occurs elsewhere (COCO's rule).
    """
    ground_truth, detections = _coco_records(images)
    if not ground_truth["annotations"]:
        return {f"{kind}_{m}": float("nan") for kind in ("box", "mask") for m in METRICS}
    ground_truth["categories"] = [{"id": c} for c in range(1, num_classes)]
    results = {}
    for kind, iou_type in (("box", "bbox"), ("mask", "segm")):
        stats = _evaluate(ground_truth, detections, iou_type) if detections else np.zeros(3)
        results.update({f"{kind}_{m}": float(max(v, 0.0)) for m, v in zip(METRICS, stats[:3])})
    return results


def _coco_records(images: list[ScoredImage]) -> tuple[dict, list[dict]]:
    ground_truth = {"images": [], "annotations": []}
    detections = []
    for image_id, image in enumerate(images, start=1):
        width, height = image.truth.masks.shape[1:] if len(image.truth) else image.prediction.masks.shape[1:]
        ground_truth["images"].append({"id": image_id, "width": int(width), "height": int(height)})
        for box, label, mask in zip(image.truth.boxes.tolist(), image.truth.labels.tolist(), image.truth.masks):
            encoded = _rle(mask)
            ground_truth["annotations"].append({
                "id": len(ground_truth["annotations"]) + 1, "image_id": image_id, "category_id": int(label),
                "bbox": _xywh(box), "area": float(mask.sum()), "iscrowd": 0, "segmentation": encoded,
            })  # fmt: skip
        for box, label, mask, score in zip(
            image.prediction.boxes.tolist(), image.prediction.labels.tolist(), image.prediction.masks, image.scores
        ):
            encoded = _rle(mask)
            detections.append({
                "image_id": image_id, "category_id": int(label), "bbox": _xywh(box), "score": float(score),
                "segmentation": encoded,
            })  # fmt: skip
    return ground_truth, detections


def _evaluate(ground_truth: dict, detections: list[dict], iou_type: str) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary table
        gt = COCO()
        gt.dataset = {**ground_truth, "annotations": [dict(a) for a in ground_truth["annotations"]]}
        gt.createIndex()
        drop = "segmentation" if iou_type == "bbox" else "bbox"  # each result carries what it is scored on
        dt = gt.loadRes([{k: v for k, v in d.items() if k != drop} for d in detections])
        evaluation = COCOeval(gt, dt, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def _rle(mask) -> dict:
    """COCO's run-length encoding of an (x, y) mask: transposed to COCO's rows, Fortran order, uint8."""
    from pycocotools import mask as rle

    return rle.encode(np.asfortranarray(mask.numpy().T.astype(np.uint8)))


def _xywh(box: list[float]) -> list[float]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]
