"""Training Mask R-CNN through the shared engine: the detection task (targets from the instance maps, COCO AP at
validation) and what a finished run writes (weights, card, metrics, curves, instance overlays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.data.instances import instances_from_maps, semantic_from_instances
from pipeline.data.labels import LabelRegistry
from pipeline.errors import InvalidInputError
from pipeline.evaluation.coco import ScoredImage, coco_metrics
from pipeline.evaluation.figures import save_instance_overlay, save_training_curves
from pipeline.evaluation.metrics import confusion_matrix, miou_and_pixel_accuracy
from pipeline.modelcard import write_model_card
from pipeline.tracking.mlflow_run import RunTracker
from pipeline.training.checkpoint import save_state_dict
from pipeline.training.finalize import TIMINGS_FILE, model_card, run_summary, write_plot_files, write_reports
from pipeline.training.run import TrainingRun

OVERLAY_SCORE = 0.5  # overlays show detections from this score


class DetectionTask:
    """Instance masks in, Mask R-CNN's losses out; validated by COCO box and mask AP and by the mIoU of the class map
    painted from the predicted instances (so that Mask R-CNN sits in the same table as the semantic models).

    Every rank scores every held-out image (COCO AP is not a sum over images); there are few of them.
    """

    score_key = "val_mask_ap"
    needs_labels = True

    def batch_loss(self, run: TrainingRun, batch: dict) -> torch.Tensor:
        targets = [instances_from_maps(ids[0], classes[0]) for ids, classes in zip(batch["instances"], batch["label"])]
        losses = run.model(batch["image"], targets)
        return sum(losses.values())

    @torch.no_grad()
    def validate(self, run: TrainingRun, entries: list[dict] | None = None, prefix: str = "val") -> dict:
        """COCO AP, AP50, AP75 for boxes and masks, and mIoU / pixel accuracy of the painted class map."""
        cases = [run.case(entry) for entry in (run.val_entries if entries is None else entries)]
        scored = [self.score_image(run, case) for case in cases]
        classes = run.manifest.num_classes
        confusion = torch.zeros(classes, classes, dtype=torch.int64)
        for image, case in zip(scored, cases):
            painted = semantic_from_instances(image.prediction, torch.as_tensor(image.scores), case.label.shape[:2])
            confusion += confusion_matrix(painted, torch.from_numpy(case.label[:, :, 0].astype(np.int64)), classes)
        metrics = {f"{prefix}_{k}": v for k, v in coco_metrics(scored, classes).items()}
        metrics[f"{prefix}_miou"], metrics[f"{prefix}_pixel_accuracy"] = miou_and_pixel_accuracy(confusion)
        return metrics

    def score_image(self, run: TrainingRun, case) -> ScoredImage:
        """One held-out image's ground-truth instances and the model's detections (masks thresholded)."""
        if case.instances is None:
            raise InvalidInputError(
                run.manifest.root / "dataset.json", "Mask R-CNN needs instance masks (SegmentationObject/)", case.case_id
            )
        run.model.eval()
        image = torch.as_tensor(case.image[..., 0], dtype=torch.float32)[None].to(run.device)
        detections = run.bare_model(image)[0]
        truth = instances_from_maps(
            torch.from_numpy(case.instances[:, :, 0].astype(np.int64)), torch.from_numpy(case.label[:, :, 0].astype(np.int64))
        )
        prediction = detections.instances(run.cfg.model.mask_threshold).to(torch.device("cpu"))
        return ScoredImage(truth, prediction, detections.scores.cpu().numpy())

    def finish(self, run: TrainingRun, state, tracker, kept_epoch: int) -> dict:
        """Score the kept weights (``train.weights``) on the test images; rank 0 writes model, card, reports and overlays."""
        test_entries = [e for e in run.manifest.split("test") if e.get("label")]
        test = self.validate(run, test_entries, "test") if run.cfg.train.evaluate_test and test_entries else {}
        return finalize_detection(run, state, tracker, kept_epoch, test, self) if run.ctx.is_main else {}


def finalize_detection(run: TrainingRun, state, tracker: RunTracker, kept_epoch: int, test: dict, task) -> dict:
    """Mask R-CNN's end of run: ``model.pt``, card, metrics (COCO AP and mIoU), history, plots, curves and instance
    overlays, logged to MLflow. No ONNX or exported-program copy: its proposals and NMS are data-dependent."""
    t = run.cfg.train
    out_dir, reports = Path(t.out_dir), Path(t.reports_dir)
    kept = next(h for h in state.history if h["epoch"] == kept_epoch)
    metrics = {
        **run_summary(run.cfg.model.name, state, kept_epoch, run.cfg.train.weights),
        **{k: v for k, v in kept.items() if k.startswith("val_")},
    }
    metrics.update(test)
    save_state_dict(out_dir / "model.pt", run.bare_model)
    write_model_card(model_card(run, metrics), out_dir / "model_card.json")
    write_reports(reports, metrics, state.history)
    write_plot_files(state.history, reports / "plots", ("val_box_ap", "val_mask_ap", "val_mask_ap50", "val_miou"))
    figures = [reports / "details" / "curves.png"]
    save_training_curves(figures[0], state.history, score="ap")
    registry = LabelRegistry.from_mapping(run.manifest.labels)
    for entry in run.val_entries[: t.overlay_cases]:
        case = run.case(entry)
        scored = task.score_image(run, case)
        truth = [(m.numpy(), int(c)) for m, c in zip(scored.truth.masks, scored.truth.labels)]
        keep = scored.scores >= OVERLAY_SCORE
        shown = [(m.numpy(), int(c), float(p)) for m, c, p, k in
                 zip(scored.prediction.masks, scored.prediction.labels, scored.scores, keep) if k]  # fmt: skip
        figures.append(reports / "details" / f"overlay_{case.case_id}.png")
        save_instance_overlay(
            figures[-1], case.image[:, :, :, 0], truth, shown, registry, f"{case.case_id} (score >= {OVERLAY_SCORE})"
        )
    tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("test_")}, step=state.epoch)
    for path in [reports / "metrics.json", reports / TIMINGS_FILE, out_dir / "model_card.json", out_dir / "model.pt"]:
        tracker.log_artifact(path)
    for path in figures:
        tracker.log_artifact(path, "figures")
    return metrics
