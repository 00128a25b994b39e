"""Networks: a registry of builders keyed by name (``build_model``). Models know tensors, not files."""

from pipeline.models.registry import available_models, build_model, register

__all__ = ["available_models", "build_model", "register"]
