"""The plan: what ``segpipe plan`` decides from the dataset fingerprint, as typed objects.

``plans.json`` is written once by the ``plan`` stage and read by ``preprocess``, ``pretrain``,
``train`` and (through the model card) ``infer``/``predict``. Nothing else builds these by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import InvalidInputError
from pipeline.io_utils import write_json_atomic

ConfigurationName = Literal["2d", "3d_fullres", "3d_lowres"]
Sizes = tuple[tuple[int, ...], ...]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelNormalisation(Frozen):
    """How one input channel is normalised.

    ``ct``: clip to the dataset's foreground percentiles, z-score with the foreground mean/std (HU are absolute).
    ``zscore``: per scan, z-score with the mean/std inside the foreground mask of
    :func:`pipeline.preprocess.intensity.foreground_threshold` (above the noise peak of magnitude MR; Otsu's threshold when
    there is no noise peak), 0 outside it. ``mask`` names that rule; ``none`` (always for CT, which uses absolute HU)
    z-scores over every voxel and crops nothing: only where ``preprocess.mr_normalisation_mask: none`` asks for it (a
    view that is all tissue, as in a crop inside the body, where the noise-floor rule would cut tissue out).
    ``bias_correction``: ``n4`` divides out the MR bias field in that mask first
    (:func:`pipeline.preprocess.intensity.correct_bias_field`); plans and cards without the key mean ``none``.
    """

    channel: str
    scheme: Literal["ct", "zscore"]
    mask: Literal["foreground", "none"] = "foreground"
    bias_correction: Literal["n4", "none"] = "none"
    mean: float | None = None
    std: float | None = None
    percentile_low: float | None = None
    percentile_high: float | None = None

    @field_validator("mask", mode="before")
    @classmethod
    def _renamed_mask(cls, value):
        """Plans and model cards written before the rename called the same rule ``otsu``: they still load."""
        return "foreground" if value == "otsu" else value


class BiasProbe(Frozen):
    """The evidence for one channel's planned bias correction: Fisher's ratio of the labelled classes' intensities
    (:func:`pipeline.preprocess.intensity.class_separation`) without and with N4, over ``cases`` labelled scans."""

    channel: str
    cases: int
    none: float
    n4: float


class ConfigurationPlan(Frozen):
    """One trainable configuration: its grid, patch, batch, network topology and training length."""

    name: ConfigurationName
    data_identifier: str = Field(description="the preprocessed data this configuration reads (shared by 2d and 3d_fullres)")
    spacing: tuple[float, float, float] = Field(description="target voxel size (x, y, z) in RAS, mm")
    median_shape: tuple[int, ...] = Field(description="median shape after cropping and resampling (the network's axes)")
    patch_size: tuple[int, ...]
    batch_size: int
    widths: tuple[int, ...]
    pools: Sizes
    kernels: Sizes
    iterations_per_epoch: int
    max_epochs: int
    val_every: int
    estimated_activation_mb: float = Field(description="activation memory per sample of one training step (our estimate)")
    slice_axis: int = Field(2, ge=0, le=2, description="2d: the axis slices are taken across, the grid's coarsest (2 = z)")

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)


class Plans(Frozen):
    """Everything the plan stage decided, plus the fingerprint facts it decided from."""

    dataset: str
    modalities: tuple[str, ...]
    labels: dict[str, str]
    profile: str
    num_training_cases: int
    median_spacing: tuple[float, float, float]
    fullres_spacing: tuple[float, float, float]
    anisotropic_axis: int | None
    median_shape_fullres: tuple[int, int, int]
    normalisation: tuple[ChannelNormalisation, ...]
    configurations: dict[str, ConfigurationPlan]
    default_3d: ConfigurationName = Field(description="what `plan.configuration: 3d` means under this profile")
    overrides: dict[str, str] = Field(default_factory=dict, description="plan keys the user set explicitly")
    bias_probe: tuple[BiasProbe, ...] = Field((), description="per probed channel, the bias probe's separations (not CT)")

    def configuration(self, name: str, source: Path | str = "plans.json") -> ConfigurationPlan:
        """The named configuration; ``3d`` means the profile's choice (``default_3d``).

        Raises:
            InvalidInputError: the plan has no such configuration.
        """
        key = self.default_3d if name == "3d" else name
        if key not in self.configurations:
            raise InvalidInputError(
                Path(source), f"no configuration '{name}' in the plan; planned: {sorted(self.configurations)}"
            )
        return self.configurations[key]


def write_plans(plans: Plans, path: Path) -> Path:
    """Write ``plans.json`` atomically."""
    write_json_atomic(Path(path), plans.model_dump(mode="json"))
    return Path(path)


def read_plans(path: Path) -> Plans:
    """Read and validate ``plans.json``.

    Raises:
        InvalidInputError: missing (run `segpipe plan`), unreadable or invalid file.
    """
    path = Path(path)
    try:
        return Plans.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise InvalidInputError(path, "no plan: run `segpipe plan` (the DVC stage `plan`) first") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(path, f"unreadable or invalid plan ({exc})") from None
