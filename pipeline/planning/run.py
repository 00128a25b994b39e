"""The ``plan`` stage: fingerprint the raw dataset, plan every configuration, write ``plans.json``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.crossval.splits import write_splits
from pipeline.data.layout import load_dataset
from pipeline.errors import ConfigError
from pipeline.io_utils import write_json_atomic
from pipeline.planning.planner import PlanningInput, bias_correction_from_probe, make_plans
from pipeline.planning.plans import BiasProbe, Plans, write_plans
from pipeline.planning.profiles import get_profile
from pipeline.preprocess.fingerprint import compute_fingerprint


def plan_dataset(cfg: PipelineConfig) -> Plans:
    """Fingerprint ``cfg.data.root`` and write ``plans.json`` (and ``fingerprint.json`` beside it).

    An explicit ``preprocess.spacing_mm`` replaces the planned full-resolution spacing and is recorded
    in ``plans.overrides``.

    Raises:
        DatasetError: unreadable cases (all listed).
        ConfigError: unknown profile.
    """
    dataset = load_dataset(cfg.data.root)
    s = cfg.preprocess
    fingerprint, problems = compute_fingerprint(
        dataset, s.ct_percentiles, s.intensity_samples_per_case, cfg.base.seed, s.body_threshold_hu, cfg.base.num_workers,
        s.crop_margin_mm, cfg.checks,
    )  # fmt: skip
    if problems:
        from pipeline.errors import DatasetError

        raise DatasetError(problems, f"the fingerprint could not read {len(problems)} case(s)")
    try:
        profile = get_profile(cfg.plan.profile)
    except KeyError as exc:
        raise ConfigError(str(exc)) from None
    modalities = tuple(dataset.modalities)
    overrides = {}
    probe = fingerprint.get("bias_correction_probe", [])
    masks, bias_correction = ("foreground",) * len(modalities), bias_correction_from_probe(probe, modalities)
    if s.mr_bias_correction is not None:
        bias_correction = (s.mr_bias_correction,) * len(modalities)
        overrides["preprocess.mr_bias_correction"] = s.mr_bias_correction
    if s.mr_normalisation_mask == "none":  # N4 is fitted in the foreground mask: without one, none
        masks, bias_correction = ("none",) * len(modalities), ("none",) * len(modalities)
    if s.mr_normalisation_mask is not None:
        overrides["preprocess.mr_normalisation_mask"] = s.mr_normalisation_mask
    cases = fingerprint["cases"]
    spacings = np.array([c["spacing"] for c in cases], dtype=float)
    cropped = dataset.is_ct or "foreground" in masks  # with no channel masked, preprocessing crops nothing
    shapes = np.array([c["shape_after_crop" if cropped else "shape"] for c in cases], dtype=float)
    if s.spacing_mm is not None:
        shapes = np.round(shapes * spacings / np.asarray(s.spacing_mm))
        spacings = np.tile(np.asarray(s.spacing_mm, dtype=float), (len(cases), 1))
        overrides["preprocess.spacing_mm"] = str(list(s.spacing_mm))
    data = PlanningInput(
        dataset=str(cfg.data.root),
        modalities=modalities,
        labels={str(label.value): label.name for label in dataset.labels.labels},
        spacings=spacings,
        shapes_after_crop=shapes,
        intensity=fingerprint["intensity"] if dataset.is_ct else None,
        context_slices=cfg.plan.context_slices,
    )
    plans = make_plans(data, profile, bias_correction, masks)
    plans = plans.model_copy(update={"overrides": overrides, "bias_probe": tuple(BiasProbe(**p) for p in probe)})
    labelled = [c.case_id for c in dataset.split("train") if c.label is not None]
    cv = cfg.crossval
    write_splits(labelled, cv.folds, cv.seed, cv.split_file, cv.custom_split)
    write_json_atomic(Path(cfg.plan.file).parent / "fingerprint.json", fingerprint)
    write_plans(plans, cfg.plan.file)
    return plans


def describe_plans(plans: Plans) -> str:
    """A few lines for the console: spacing, normalisation and each configuration's patch, batch and pooling."""
    lines = [
        f"plan for {plans.dataset} ({', '.join(plans.modalities)}; {plans.num_training_cases} training cases; profile "
        f"{plans.profile})",
        f"  median spacing {_mm(plans.median_spacing)}, full-resolution target {_mm(plans.fullres_spacing)}",
        "  normalisation: " + ", ".join(f"{n.channel}: {n.scheme}" + (_mask_words(n.mask) if n.scheme != "ct" else "")
                                        + (f" after {n.bias_correction} bias correction" if n.bias_correction != "none" else "")
                                        for n in plans.normalisation),
    ]  # fmt: skip
    for name, c in plans.configurations.items():
        pooled = [int(np.log2(np.prod([p[a] for p in c.pools]))) for a in range(c.spatial_dims)]
        lines.append(
            f"  {name:10s} spacing {_mm(c.spacing)} patch {list(c.patch_size)} batch {c.batch_size} widths {list(c.widths)} "
            f"poolings per axis {pooled} steps {c.iterations_per_epoch}x{c.max_epochs}"
        )
    lines.append(f"  `plan.configuration: 3d` trains {plans.default_3d}")
    if plans.overrides:
        lines.append(f"  overrides: {plans.overrides}")
    lines += [
        f"  bias probe, channel {i} {p.channel} ({p.cases} labelled cases): class separation {p.none:.4g} without N4, "
        f"{p.n4:.4g} with it"
        for i, p in enumerate(plans.bias_probe)
    ]
    return "\n".join(lines)


def _mask_words(mask: str) -> str:
    return " in the foreground mask" if mask == "foreground" else " over the whole scan"


def _mm(values) -> str:
    return "x".join(f"{v:.3g}" for v in values) + " mm"
