"""Configuration: YAML files validated into typed objects, plus dotted ``key=value`` overrides.

One config system: every stage reads the same file (``configs/params.yaml`` by default; DVC
reads its params from it too), later files given with ``-c`` overlay earlier ones, and trailing
``section.key=value`` overrides win last. Unknown or mistyped keys are errors naming the key and
the file it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from pipeline.config.base import Section
from pipeline.config.data import (
    BaseSettings,
    CheckSettings,
    CrossvalSettings,
    DataSettings,
    NaturalSettings,
    PlanSettings,
    PreprocessSettings,
    ScenesSettings,
    SynthSettings,
    VerifySettings,
)
from pipeline.config.models import (
    AutoencoderSettings,
    DeconvNetSettings,
    DeepLabSettings,
    FCNSettings,
    MaskRCNNSettings,
    ModelSettings,
    PSPNetSettings,
    SegNetSettings,
    SETRSettings,
    SwinSettings,
    UNet2dSettings,
    VNet3dSettings,
)
from pipeline.config.stages import (
    AugmentSettings,
    EvaluateSettings,
    ExportFormat,
    ExportSettings,
    InferSettings,
    LossSettings,
    TrackingSettings,
    TrainSettings,
)
from pipeline.errors import ConfigError
from pipeline.io_utils import text_digest

__all__ = [
    "DEFAULT_CONFIG", "AugmentSettings",
    "CrossvalSettings", "AutoencoderSettings", "BaseSettings", "DataSettings", "DeconvNetSettings",
    "DeepLabSettings", "EvaluateSettings", "ExportFormat", "ExportSettings", "FCNSettings", "InferSettings", "LossSettings",
    "MaskRCNNSettings", "ModelSettings", "NaturalSettings", "PSPNetSettings", "PipelineConfig", "PlanSettings",
    "PreprocessSettings", "ScenesSettings", "Section",
    "SegNetSettings", "SETRSettings", "SwinSettings", "SynthSettings", "TrackingSettings", "TrainSettings", "UNet2dSettings",
    "VNet3dSettings", "VerifySettings", "CheckSettings", "load_config", "parse_override", "with_base_config",
]  # fmt: skip

DEFAULT_CONFIG = Path("configs/params.yaml")


class PipelineConfig(Section):
    """The whole configuration; each stage reads its own section plus ``base`` and ``data``."""

    base: BaseSettings = BaseSettings()
    data: DataSettings = DataSettings()
    synth: SynthSettings = SynthSettings()
    scenes: ScenesSettings = ScenesSettings()
    natural: NaturalSettings = NaturalSettings()
    checks: CheckSettings = CheckSettings()
    verify: VerifySettings = VerifySettings()
    plan: PlanSettings = PlanSettings()
    crossval: CrossvalSettings = CrossvalSettings()
    preprocess: PreprocessSettings = PreprocessSettings()
    model: ModelSettings = UNet2dSettings()
    loss: LossSettings = LossSettings()
    augment: AugmentSettings = AugmentSettings()
    train: TrainSettings = TrainSettings()
    tracking: TrackingSettings = TrackingSettings()
    infer: InferSettings = InferSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    export: ExportSettings = ExportSettings()

    @model_validator(mode="after")
    def _check_patch(self) -> PipelineConfig:
        dims, patch = self.model.spatial_dims, self.train.patch_size
        if self.plan.configuration and "patch_size" not in self.train.model_fields_set:
            return self  # the plan fills patch and topology in (pipeline.planning.resolve), then this check runs
        if len(patch) != dims:
            raise ValueError(f"train.patch_size {list(patch)} must have {dims} entries for model '{self.model.name}'")
        divisor = getattr(self.model, "divisor", None) or 2 ** (len(self.model.widths) - 1)
        divisors = divisor if isinstance(divisor, tuple) else (divisor,) * dims
        if any(p % d for p, d in zip(patch, divisors)):
            model = self.model.name
            raise ValueError(f"train.patch_size {list(patch)} must be divisible by {list(divisors)} for model '{model}'")
        if isinstance(self.model, SETRSettings) and tuple(patch) != tuple(self.model.image_size):
            raise ValueError(f"train.patch_size {list(patch)} must equal model.image_size {list(self.model.image_size)} for SETR")
        return self

    def section_digest(self, *names: str) -> str:
        """Return a stable hash of the named sections (used to detect changed settings)."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in names}
        return text_digest(json.dumps(payload, sort_keys=True))


def with_base_config(paths: list[Path] | None) -> list[Path]:
    """Model configs are overlays: ``configs/params.yaml`` (when present) is put first unless already listed."""
    files = list(paths or [])
    if DEFAULT_CONFIG.exists() and all(Path(f).resolve() != DEFAULT_CONFIG.resolve() for f in files):
        files.insert(0, DEFAULT_CONFIG)
    return files


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed value); the value is read as YAML.

    Raises:
        ConfigError: if there is no ``=`` or the key is empty.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. preprocess.num_workers=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def load_config(paths: list[Path] | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load YAML files (later overlay earlier), apply overrides and validate.

    Args:
        paths: config files; ``None`` means ``configs/params.yaml`` if it exists, else defaults.
        overrides: ``section.key=value`` strings applied last.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown key or invalid value (naming key and source).
    """
    if paths is None:
        paths = [DEFAULT_CONFIG] if DEFAULT_CONFIG.exists() else []
    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for path in paths:
        for source, data in _with_extends(Path(path)):
            _merge(merged, data, (), source, sources)
    for text in overrides or []:
        keys, value = parse_override(text)
        _merge(merged, _nest(keys, value), (), f"override {text!r}", sources)
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def _with_extends(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The file and the files it ``extends`` (a path relative to it), base first: one base plus overrides."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself ({' -> '.join(str(p) for p in seen)})")
    data = _read_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return [(str(path), data)]
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'extends' must be a file path, got {base!r}")
    return [*_with_extends(path.parent / base, (*seen, path.resolve())), (str(path), data)]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    for key in reversed(keys):
        value = {key: value}
    return value


def _merge(dst: dict, src: dict, prefix: tuple[str, ...], source: str, sources: dict) -> None:
    for key, value in src.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, path, source, sources)
        else:
            dst[key] = value
        if not isinstance(value, dict):
            sources[path] = source
        else:
            sources.setdefault(path, source)


def _describe(exc: ValidationError, sources: dict[tuple[str, ...], str]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        key = ".".join(loc)
        source = next((sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), "defaults")
        if not loc:
            lines.append(f"{', '.join(sorted(set(sources.values()))) or 'defaults'}: {err['msg']}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            lines.append(f"{source}: invalid value for '{key}': {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)
