"""What differs between training a segmentation network and pretraining an autoencoder.

The engine's loop is the same for both; a task supplies the loss of a batch, the validation
metrics (with the key that selects the best model) and what to write at the end.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.evaluation.metrics import confusion_matrix, dice_per_class, miou_and_pixel_accuracy
from pipeline.training.data import PatchDataset
from pipeline.training.distributed import all_reduce_sum
from pipeline.training.finalize import finalize, finalize_pretraining
from pipeline.training.run import Task, TrainingRun


class SegmentationTask:
    """Labels in, softmax logits out; validated by sliding-window Dice per class, mean IoU and pixel accuracy."""

    score_key = "val_dice_mean"
    needs_labels = True

    def batch_loss(self, run: TrainingRun, batch: dict) -> torch.Tensor:
        logits = run.model(batch["image"])
        return run.loss(logits.float(), batch["label"], batch.get("weight"))

    def validate(self, run: TrainingRun, entries: list[dict] | None = None, prefix: str = "val") -> dict:
        """Dice per class (averaged over cases) and mIoU / pixel accuracy (over all pixels) on ``entries`` (default:
        the held-out cases), reduced over ranks."""
        entries = run.val_entries if entries is None else entries
        names = [run.manifest.labels[v] for v in range(1, run.manifest.num_classes)]
        classes = run.manifest.num_classes
        sums = torch.zeros(len(names) + 1, dtype=torch.float64)
        confusion = torch.zeros(classes, classes, dtype=torch.int64)
        run.model.eval()
        for entry in entries[run.ctx.rank :: run.ctx.world_size]:
            case = run.case(entry)
            probabilities = run.predict(case.image)
            if getattr(run.cfg.model, "crf", False):  # DeepLab v1's dense-CRF refinement
                probabilities = refine_with_crf(run, case.image, probabilities)
            prediction, truth = probabilities.argmax(0).cpu(), torch.from_numpy(case.label)
            sums[:-1] += dice_per_class(prediction, truth, classes).double()
            sums[-1] += 1
            confusion += confusion_matrix(prediction, truth, classes)
        all_reduce_sum(sums, run.ctx)
        all_reduce_sum(confusion, run.ctx)
        dice = sums[:-1] / sums[-1].clamp_min(1)
        metrics = {f"{prefix}_dice_{name}": float(d) for name, d in zip(names, dice)}
        metrics[f"{prefix}_dice_mean"] = float(dice.mean())
        metrics[f"{prefix}_miou"], metrics[f"{prefix}_pixel_accuracy"] = miou_and_pixel_accuracy(confusion)
        return metrics

    def finish(self, run: TrainingRun, state, tracker, kept_epoch: int) -> dict:
        """Score the kept weights (``train.weights``) on the labelled test cases; rank 0 writes model, card, reports."""
        test_entries = [e for e in run.manifest.split("test") if e.get("label")]
        test = self.validate(run, test_entries, "test") if run.cfg.train.evaluate_test and test_entries else {}
        decision = self.decide_postprocessing(run) if run.ctx.is_main else None
        return finalize(run, state, tracker, kept_epoch, test, decision) if run.ctx.is_main else {}

    def decide_postprocessing(self, run: TrainingRun):
        """Largest-component postprocessing decided on the held-out validation cases with the kept weights."""
        from pipeline.inference.postprocess import decide_postprocessing, object_counts

        run.model.eval()
        cases = [run.case(entry) for entry in run.val_entries]
        predictions = [run.predict(case.image).argmax(0).cpu().numpy() for case in cases]
        num_classes = run.manifest.num_classes
        counts = object_counts((c.label for c in run.train_cases if c.label is not None), num_classes)
        return decide_postprocessing(predictions, [case.label for case in cases], num_classes, counts)


class ReconstructionTask:
    """Images in, images out (autoencoder pretraining); validated by reconstruction error on fixed patches."""

    score_key = "val_score"
    needs_labels = False
    validation_patches = 16

    def batch_loss(self, run: TrainingRun, batch: dict) -> torch.Tensor:
        model = run.bare_model
        output = run.model(model.corrupt(batch["image"]))
        loss, _ = model.loss(batch["image"], output)
        return loss

    @torch.no_grad()
    def validate(self, run: TrainingRun) -> dict:
        """Mean squared reconstruction error on the same patches of the held-out scans every time."""
        run.model.eval()
        patches = self.validation_batch(run)
        sums = torch.zeros(2, dtype=torch.float64)
        for index in range(run.ctx.rank, len(patches), run.ctx.world_size):
            image = patches[index : index + 1].to(run.device)
            output = run.bare_model(image)
            sums += torch.tensor([torch.mean((output["reconstruction"].float() - image) ** 2).item(), 1.0], dtype=torch.float64)
        all_reduce_sum(sums, run.ctx)
        mse = float(sums[0] / sums[1].clamp_min(1))
        return {"val_reconstruction_mse": mse, "val_score": -mse}

    def validation_batch(self, run: TrainingRun) -> torch.Tensor:
        """``validation_patches`` patches of the held-out scans, the same for every call (fixed seed, no augmentation)."""
        if run.validation_batch is None:
            cases = [run.case(e) for e in run.val_entries]
            t = run.cfg.train
            dataset = PatchDataset(
                cases,
                t.patch_size,
                run.cfg.model.context_slices,
                0.0,
                self.validation_patches,
                seed=12345,
                slice_axis=run.cfg.model.slice_axis,
            )
            run.validation_batch = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
        return run.validation_batch

    def finish(self, run: TrainingRun, state, tracker, kept_epoch: int) -> dict:
        return finalize_pretraining(run, state, tracker, kept_epoch) if run.ctx.is_main else {}


def refine_with_crf(run: TrainingRun, image: np.ndarray, probabilities: torch.Tensor) -> torch.Tensor:
    """Dense-CRF refinement of one photograph's probabilities (C, x, y, 1); the image is un-standardised back to RGB."""
    from pipeline.inference.crf import dense_crf

    natural = run.cfg.natural
    rgb = image[:, :, :, 0] * np.asarray(natural.std)[:, None, None] + np.asarray(natural.mean)[:, None, None]
    rgb = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8).transpose(2, 1, 0)  # (y, x, 3)
    refined = dense_crf(rgb, probabilities[..., 0].permute(0, 2, 1).cpu().numpy())
    return torch.from_numpy(refined.transpose(0, 2, 1)[..., None].copy()).to(probabilities.device)


def task_for(model_name: str) -> Task:
    """The task a model is trained for: reconstruction for ``autoencoder``, instances for ``mask_rcnn``,
    segmentation otherwise."""
    if model_name == "autoencoder":
        return ReconstructionTask()
    if model_name == "mask_rcnn":
        from pipeline.training.detection import DetectionTask  # only Mask R-CNN needs pycocotools and instance code

        return DetectionTask()
    return SegmentationTask()
