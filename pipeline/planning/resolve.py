"""Apply a planned configuration to a training config: planned keys filled in, explicit keys kept and recorded.

A key counts as explicit when a config file or override set it (pydantic's ``model_fields_set``):
the plan never silently replaces what the user wrote, and every such override is reported.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.planning.memory import vnet_convs
from pipeline.planning.plans import ConfigurationPlan, Plans, read_plans

PLANNED_TRAIN_KEYS = ("patch_size", "batch_size", "iterations_per_epoch", "max_epochs", "val_every")
PLANNED_MODEL_KEYS = ("widths", "pools", "kernels", "convs")


def planned_model_values(model_name: str, encoder: str | None, conf: ConfigurationPlan) -> dict:
    """The model keys a configuration decides for a ``unet2d``, ``vnet3d`` or autoencoder of either."""
    network = encoder or model_name
    values = {"widths": conf.widths, "pools": conf.pools, "kernels": conf.kernels}
    if network == "vnet3d":
        values["convs"] = vnet_convs(len(conf.widths))
    return values


def expected_network(model_name: str, encoder: str | None) -> int:
    """Spatial dimensions a configuration must have for this model."""
    return 2 if (encoder or model_name) == "unet2d" else 3


def apply_plan(cfg: PipelineConfig, plans: Plans | None = None) -> tuple[PipelineConfig, dict[str, str]]:
    """Resolve ``cfg`` against ``plan.configuration`` of the plan; a config without one is returned unchanged.

    Returns:
        (the resolved config, {dotted key: "explicit value (planned value)"} for every explicit override).

    Raises:
        ConfigError: the configuration's dimensions do not fit the model (e.g. 2d for a V-Net).
        InvalidInputError: no plan file, or no such configuration in it.
    """
    name = cfg.plan.configuration
    if name is None:
        return cfg, {}
    plans = plans or read_plans(cfg.plan.file)
    conf = plans.configuration(name, cfg.plan.file)
    encoder = getattr(cfg.model, "encoder", None) if cfg.model.name == "autoencoder" else None
    if expected_network(cfg.model.name, encoder) != conf.spatial_dims:
        raise ConfigError(f"plan.configuration={name} is {conf.spatial_dims}D; model '{cfg.model.name}' needs the other")
    overrides: dict[str, str] = {}
    model = _fill(cfg.model, planned_model_values(cfg.model.name, encoder, conf), "model", overrides)
    if (encoder or cfg.model.name) == "unet2d" and "context_slices" not in cfg.model.model_fields_set:
        model["context_slices"] = cfg.plan.context_slices
    if (encoder or cfg.model.name) == "unet2d":
        model.update(_fill(cfg.model, {"slice_axis": conf.slice_axis}, "model", overrides))
    train = _fill(cfg.train, {k: getattr(conf, k) for k in PLANNED_TRAIN_KEYS}, "train", overrides)
    dumped = cfg.model_dump(mode="json")
    dumped["model"].update(model)
    dumped["train"].update(train)
    dumped["preprocess"]["out_dir"] = str(Path(cfg.preprocess.out_dir) / conf.data_identifier)
    try:
        resolved = PipelineConfig.model_validate(dumped)
    except ValueError as exc:
        raise ConfigError(f"the plan's configuration {name} does not fit the explicit settings: {exc}") from None
    return resolved, overrides


def with_fold_folders(cfg: PipelineConfig) -> PipelineConfig:
    """With ``train.fold`` set, the model, checkpoints and reports of that fold go to ``.../fold_<k>`` sub-folders."""
    fold = cfg.train.fold
    if fold is None:
        return cfg
    t = cfg.train
    update = {name: Path(getattr(t, name)) / f"fold_{fold}" for name in ("out_dir", "checkpoint_dir", "reports_dir")}
    return cfg.model_copy(update={"train": t.model_copy(update=update)})


def _fill(section, planned: dict, prefix: str, overrides: dict[str, str]) -> dict:
    """Planned values for the keys ``section`` did not set explicitly; explicit differing ones go to ``overrides``."""
    values = {}
    for key, value in planned.items():
        if key in section.model_fields_set:
            explicit = getattr(section, key)
            if _plain(explicit) != _plain(value):
                overrides[f"{prefix}.{key}"] = f"{_plain(explicit)} (planned {_plain(value)})"
        else:
            values[key] = value
    return values


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
