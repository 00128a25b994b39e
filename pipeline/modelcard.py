"""The model card: one typed object beside every trained network (``model_card.json``).

Training writes it (:func:`write_model_card`), inference reads it (:func:`read_model_card`): how to
rebuild the network, how the training scans were preprocessed (so a new scan is prepared the same
way), the plan it was trained with and every explicit override of it, the postprocessing its
held-out cases support, provenance and intended use. Nothing else builds or parses the card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import ModelSettings, PreprocessSettings
from pipeline.errors import InvalidInputError
from pipeline.io_utils import write_json_atomic
from pipeline.planning.plans import ChannelNormalisation, ConfigurationPlan

INTENDED_USE = "Research on phantom/CT/MR segmentation. Not a medical device; not for clinical decisions."


class PlannedConfiguration(BaseModel):
    """The plan configuration a network was trained with, and the profile and normalisation around it."""

    model_config = ConfigDict(extra="forbid")

    configuration: ConfigurationPlan
    profile: str
    normalisation: tuple[ChannelNormalisation, ...]


class TrainingEnvelope(BaseModel):
    """What the training scans looked like (from the ``plan`` fingerprint): the input gate compares new scans with it.

    Spacing and body extent are per RAS axis (x, y, z); percentiles are of channel 0 over the whole scan.
    """

    model_config = ConfigDict(extra="forbid")

    modality: str
    cases: int
    spacing_min: tuple[float, float, float]
    spacing_max: tuple[float, float, float]
    extent_min: tuple[float, float, float]
    extent_max: tuple[float, float, float]
    percentile_1_min: float
    percentile_1_max: float
    percentile_50_min: float
    percentile_50_max: float
    percentile_99_min: float
    percentile_99_max: float

    @classmethod
    def from_fingerprint(cls, fingerprint: dict) -> TrainingEnvelope | None:
        """Summarise the fingerprint's per-case scan statistics (``None`` for a fingerprint without them)."""
        cases = [c["scan"] for c in fingerprint.get("cases", []) if "scan" in c]
        if not cases:
            return None
        spacing = [c["spacing_mm"] for c in cases]
        extent = [c["body_extent_mm"] for c in cases]
        low, high = [c["percentile_1"] for c in cases], [c["percentile_99"] for c in cases]
        middle = [c["percentile_50"] for c in cases]
        return cls(
            modality=str(fingerprint["modalities"][0]),
            cases=len(cases),
            spacing_min=tuple(min(s[i] for s in spacing) for i in range(3)),
            spacing_max=tuple(max(s[i] for s in spacing) for i in range(3)),
            extent_min=tuple(min(e[i] for e in extent) for i in range(3)),
            extent_max=tuple(max(e[i] for e in extent) for i in range(3)),
            percentile_1_min=min(low),
            percentile_1_max=max(low),
            percentile_50_min=min(middle),
            percentile_50_max=max(middle),
            percentile_99_min=min(high),
            percentile_99_max=max(high),
        )


class ModelCard(BaseModel):
    """What inference needs to rebuild and apply a network, plus provenance."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSettings
    in_channels: int
    num_classes: int
    labels: dict[str, str]
    modalities: tuple[str, ...]
    patch_size: tuple[int, ...]
    context_slices: int = 0
    slice_axis: int = Field(2, ge=0, le=2, description="2D models: the axis slices are taken across (2 = axial)")
    target_spacing: tuple[float, float, float]
    preprocess: PreprocessSettings
    intensity: dict[str, float] | None = Field(None, description="CT foreground statistics used to normalise")
    plan: PlannedConfiguration | None = None
    plan_overrides: dict[str, str] = Field(default_factory=dict)
    postprocessing: dict | None = Field(None, description="largest-component decision on the held-out cases")
    envelope: TrainingEnvelope | None = Field(None, description="what the training scans looked like (the input gate)")
    preprocess_config_digest: str = ""
    data_fingerprint: str = ""
    weights: Literal["best", "final"] = Field("best", description="train.weights: which epoch's weights these are")
    kept_epoch: int = Field(0, description="the epoch of these weights (0 in cards written before train.weights)")
    best_epoch: int = Field(0, description="the best validated epoch")
    metrics: dict[str, float | str | int] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str = Field("unknown", description="the last commit that changed code or configuration (source_commit)")
    transfer: str | None = None
    intended_use: str = INTENDED_USE

    @property
    def is_ct(self) -> bool:
        return str(self.modalities[0]).upper() == "CT"


def write_model_card(card: ModelCard, path: Path) -> None:
    """Write ``model_card.json`` atomically."""
    write_json_atomic(Path(path), card.model_dump(mode="json"))


def read_model_card(path: Path) -> ModelCard:
    """Read and validate ``model_card.json``.

    Raises:
        InvalidInputError: missing, unreadable, or not a valid card (the invalid keys are named).
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        reason = "no model card; a model folder holds model.pt and model_card.json from `segpipe train`"
        raise InvalidInputError(path, reason) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(path, f"unreadable model card ({exc})") from None
    _fill_pre_activation_default(payload)
    try:
        return ModelCard.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInputError(path, f"invalid model card: {problems}") from None


def _fill_pre_activation_default(payload: object) -> None:
    """A card written before ``model.activation`` existed describes a U-Net (or U-Net-encoder autoencoder) with ReLU:
    say so, so its weights load into the network they were trained in, not into today's PReLU default."""
    model = payload.get("model") if isinstance(payload, dict) else None
    if isinstance(model, dict) and model.get("name") in ("unet2d", "autoencoder"):
        model.setdefault("activation", "relu")
