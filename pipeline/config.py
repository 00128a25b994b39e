"""Configuration: YAML files validated into typed objects, plus dotted ``key=value`` overrides.

One config system: every stage reads the same file (``configs/params.yaml`` by default; DVC
reads its params from it too), later files given with ``-c`` overlay earlier ones, and trailing
``section.key=value`` overrides win last. Unknown or mistyped keys are errors naming the key and
the file it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.io_utils import text_digest

DEFAULT_CONFIG = Path("configs/params.yaml")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BaseSettings(Section):
    """Settings shared by all stages."""

    seed: int = 0
    num_workers: int = Field(2, ge=0, description="worker processes for per-case work (0 = in-process)")


class DataSettings(Section):
    """Where the dataset lives: any MSD or nnU-Net v2 raw folder (with dataset.json)."""

    root: Path = Path("data/phantom")


class SynthSettings(Section):
    """Phantom CT generator (the embedded default dataset)."""

    out_dir: Path = Path("data/phantom")
    seed: int = 1234
    n_labeled: int = Field(12, ge=0)
    n_test: int = Field(4, ge=0)
    n_unlabeled: int = Field(24, ge=0)
    matrix: int = Field(256, ge=32, description="in-plane matrix size (square)")
    inplane_spacing_mm: tuple[float, float] = (1.25, 1.45)
    slice_spacing_mm: tuple[float, float] = (3.0, 5.0)
    z_extent_mm: tuple[float, float] = (200.0, 240.0)
    noise_sd_hu: tuple[float, float] = (10.0, 22.0)
    oblique_degrees: float = Field(20.0, ge=0.0, le=45.0)

    @field_validator("inplane_spacing_mm", "slice_spacing_mm", "z_extent_mm", "noise_sd_hu")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError(f"expected 0 < low <= high, got {list(value)}")
        return value


class VerifySettings(Section):
    """Integrity checks (rows F, G and V of RELIABILITY.md)."""

    report: Path = Path("reports/verify.json")
    spacing_tolerance_mm: float = Field(1e-3, gt=0)
    origin_tolerance_mm: float = Field(1e-3, gt=0)
    direction_tolerance: float = Field(1e-4, gt=0)
    allow_singleton_4d: bool = True


class PreprocessSettings(Section):
    """Orientation, spacing, intensity normalisation and cropping."""

    out_dir: Path = Path("data/preprocessed")
    spacing_mm: tuple[float, float, float] | None = Field(
        (2.8, 2.8, 3.0), description="target (x, y, z) spacing in RAS; null = the dataset's median spacing"
    )
    ct_normalisation: Literal["percentile", "window"] = "percentile"
    ct_percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window_hu: tuple[float, float] = (-160.0, 240.0)
    body_threshold_hu: float = -500.0
    crop_margin_mm: float = Field(5.0, ge=0)
    image_interpolation: Literal["linear", "bspline"] = "linear"
    include_unlabeled: bool = True
    intensity_samples_per_case: int = Field(20000, ge=100)

    @model_validator(mode="after")
    def _check(self) -> PreprocessSettings:
        if self.spacing_mm is not None and min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing_mm must be positive, got {list(self.spacing_mm)}")
        low, high = self.ct_percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"ct_percentiles must satisfy 0 <= low < high <= 100, got {[low, high]}")
        return self


class PipelineConfig(Section):
    """The whole configuration; each stage reads its own section plus ``base`` and ``data``."""

    base: BaseSettings = BaseSettings()
    data: DataSettings = DataSettings()
    synth: SynthSettings = SynthSettings()
    verify: VerifySettings = VerifySettings()
    preprocess: PreprocessSettings = PreprocessSettings()

    def section_digest(self, *names: str) -> str:
        """Return a stable hash of the named sections (used to detect changed settings)."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in names}
        return text_digest(json.dumps(payload, sort_keys=True))


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
        _merge(merged, _read_yaml(Path(path)), (), str(path), sources)
    for text in overrides or []:
        keys, value = parse_override(text)
        _merge(merged, _nest(keys, value), (), f"override {text!r}", sources)
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


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
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            lines.append(f"{source}: invalid value for '{key}': {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)
