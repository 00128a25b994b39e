"""A trained model folder (``model.pt`` + ``model_card.json``) loaded for inference: network, preprocessing plan, labels.

Inference needs weights and the card, never the trainer: the card says how to rebuild the network
and how the training data were preprocessed (target spacing, CT intensity statistics, settings),
so a new scan is prepared exactly like the training scans.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.data.labels import LabelRegistry
from pipeline.errors import ConfigError, InvalidInputError
from pipeline.inference.onnx_backend import ONNX_FILE, OnnxNetwork
from pipeline.inference.postprocess import PostprocessingDecision
from pipeline.modelcard import TrainingEnvelope, read_model_card
from pipeline.models import build_model
from pipeline.preprocess.intensity import IntensityStats
from pipeline.preprocess.run import Plan


@dataclass(frozen=True)
class ModelBundle:
    """One trained network ready to predict."""

    folder: Path
    network: nn.Module
    plan: Plan
    labels: LabelRegistry
    modalities: tuple[str, ...]
    patch_size: tuple[int, ...]
    context_slices: int
    slice_axis: int = 2  # 2D models: the axis slices are taken across
    postprocessing: PostprocessingDecision = PostprocessingDecision(False, ())
    envelope: TrainingEnvelope | None = None  # what the training scans looked like (the input gate)

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes


def load_bundle(folder: Path, device: torch.device, backend: str = "torch") -> ModelBundle:
    """Load ``folder/model_card.json`` and ``folder/model.pt`` (``weights_only=True``) onto ``device``; with
    ``backend="onnx"`` the network runs ``folder/model.onnx`` in ONNX Runtime instead (CPU).

    Raises:
        InvalidInputError: missing or malformed card, a network the card does not describe
            (missing/unexpected/mis-shaped weights are listed), or a card without intensity statistics.
    """
    folder = Path(folder)
    card = read_model_card(folder / "model_card.json")
    network = build_model(card.model, card.in_channels, card.num_classes)
    _load_weights(network, folder / "model.pt")
    if backend == "onnx":
        if device.type != "cpu":
            raise ConfigError("infer.backend=onnx runs on the CPU: set infer.device=cpu (or infer.backend=torch on a GPU)")
        network = OnnxNetwork(folder / ONNX_FILE)
    labels = LabelRegistry.from_mapping({int(k): v for k, v in card.labels.items()})
    if card.is_ct and card.preprocess.ct_normalisation == "percentile" and not card.intensity:
        raise InvalidInputError(folder / "model_card.json", "no 'intensity' statistics (trained by an older segpipe; retrain)")
    plan = Plan(
        card.preprocess,
        card.target_spacing,
        IntensityStats(**card.intensity) if card.is_ct and card.intensity else None,
        card.is_ct,
        frozenset(labels.values),
        labels.num_classes,
        folder,
        card.preprocess_config_digest,
        bias_correction=Plan.bias_correction_of(card.plan.normalisation) if card.plan else (),
        masked=Plan.masked_of(card.plan.normalisation) if card.plan else (),
    )
    decision = PostprocessingDecision.from_json(card.postprocessing) if card.postprocessing else PostprocessingDecision(False, ())
    return ModelBundle(
        folder, network.to(device).eval(), plan, labels, card.modalities, card.patch_size, card.context_slices,
        card.slice_axis, decision, card.envelope,
    )  # fmt: skip


def _load_weights(network: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InvalidInputError(path, "no weights file") from None
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise InvalidInputError(path, f"cannot load weights ({type(exc).__name__}: {exc})") from None
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or mismatched:
        reason = f"weights do not fit the model card's network: missing {missing}, unexpected {unexpected}, shape {mismatched}"
        raise InvalidInputError(path, reason)
    network.load_state_dict(state)


def check_compatible(bundles: list[ModelBundle]) -> None:
    """An ensemble must agree on labels and input modalities.

    Raises:
        InvalidInputError: naming the first model folder that differs.
    """
    first = bundles[0]

    def describe(bundle: ModelBundle) -> str:
        return f"labels {[(lab.value, lab.name) for lab in bundle.labels.labels]}, modalities {list(bundle.modalities)}"

    for bundle in bundles[1:]:
        if bundle.labels != first.labels or bundle.modalities != first.modalities:
            reason = f"cannot ensemble with {first.folder}: {describe(bundle)} vs {describe(first)}"
            raise InvalidInputError(bundle.folder, reason)
