"""The input gate: before any network runs, is this scan inside the envelope the model was trained on?

The model card carries a :class:`pipeline.modelcard.TrainingEnvelope` (modality, spacing range, body extent, whole-scan
intensity percentiles of the training scans, from the ``plan`` fingerprint). Each check gives ``pass``, ``warn`` or
``refuse`` with its reason:

- intensities implausible for the modality: a CT model needs air near -1000 HU. A scan whose lowest percentile and
  median both sit 1024 above the training scans' is raw stored values without the rescale; any other scan without
  that air is not CT (e.g. an MR volume). An MR model refuses a scan with CT air (values near -1000);
- voxel spacing more than ``SPACING_FACTOR`` x coarser than any training scan along an axis: refuse (detail the
  model needs is not in the scan); more than ``SPACING_FACTOR`` x finer: warn (preprocessing resamples it to the
  training grid, which loses nothing the model would use);
- body extent (field of view after cropping to the body) more than ``EXTENT_FACTOR`` x outside the training range:
  warn (a head scan given to an abdomen model is often, not always, caught here).

Orientation is not gated: every supported orientation is resampled to RAS exactly (rows G6, G7), and a left-right
flipped label layout cannot be detected without anatomy the gate does not model.

Statistics come from a strided subsample (at most about ``SAMPLE_VOXELS`` voxels), so the gate costs a small fraction of
a prediction. ``--force`` segments a refused scan and records that it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import InvalidInputError

SPACING_FACTOR = 2.0
EXTENT_FACTOR = 2.0
SAMPLE_VOXELS = 2_000_000
CT_AIR_HU = -1000.0
CT_AIR_TOLERANCE_HU = 300.0  # the 1st percentile of a CT scan lies within this of the training scans' (air)
RESCALE_OFFSET = 1024.0
SCAN_PERCENTILES = (1.0, 50.0, 99.0)


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on one scan."""

    status: str  # "pass" | "warn" | "refuse"
    reasons: tuple[str, ...]
    statistics: dict = field(default_factory=dict)
    forced: bool = False

    def to_json(self) -> dict:
        """JSON form for ``qa.json``."""
        return {"status": self.status, "forced": self.forced, "reasons": list(self.reasons), "statistics": self.statistics}


def scan_statistics(image: np.ndarray, spacing: np.ndarray, body_extent_mm: np.ndarray) -> dict:
    """Whole-scan percentiles of channel 0 (strided subsample), RAS spacing and body extent."""
    volume = image[0]
    stride = max(1, int(np.ceil((volume.size / SAMPLE_VOXELS) ** (1 / 3))))
    sample = volume[::stride, ::stride, ::stride].ravel()
    low, median, high = np.percentile(sample, SCAN_PERCENTILES)
    return {
        "percentile_1": round(float(low), 2),
        "percentile_50": round(float(median), 2),
        "percentile_99": round(float(high), 2),
        "spacing_mm": [round(float(s), 4) for s in spacing],
        "body_extent_mm": [round(float(e), 1) for e in body_extent_mm],
    }


def gate(statistics: dict, envelope) -> GateResult:
    """Compare a scan's statistics with the model's training envelope; every reason is listed."""
    refuse, warn = _intensity_reasons(statistics, envelope), []
    spacing, low, high = statistics["spacing_mm"], envelope.spacing_min, envelope.spacing_max
    refuse += _range_reasons("voxel spacing", "mm", spacing, (0.0,) * 3, high, SPACING_FACTOR)  # coarser: refuse
    warn += _range_reasons("voxel spacing", "mm", spacing, low, (np.inf,) * 3, SPACING_FACTOR)  # finer: warn
    warn += _range_reasons("body extent", "mm", statistics["body_extent_mm"], envelope.extent_min, envelope.extent_max,
                           EXTENT_FACTOR)  # fmt: skip
    status = "refuse" if refuse else "warn" if warn else "pass"
    return GateResult(status, tuple(refuse + warn), statistics)


def enforce(result: GateResult, path, case: str | None, force: bool) -> GateResult:
    """Raise for a refused scan unless ``force`` (then the result records the override).

    Raises:
        InvalidInputError: row Q1, every reason listed, and how to override.
    """
    if result.status != "refuse":
        return result
    if force:
        return GateResult(result.status, result.reasons, result.statistics, forced=True)
    reasons = "; ".join(result.reasons)
    raise InvalidInputError(path, f"outside the model's training envelope: {reasons} (--force segments it anyway)", case, "Q1")


def _intensity_reasons(statistics: dict, envelope) -> list[str]:
    low = statistics["percentile_1"]
    if envelope.modality.upper() == "CT":
        trained_low = (envelope.percentile_1_min, envelope.percentile_1_max)
        if trained_low[0] - CT_AIR_TOLERANCE_HU <= low <= trained_low[1] + CT_AIR_TOLERANCE_HU:
            return []
        median = statistics["percentile_50"] - RESCALE_OFFSET
        shifted_air = abs(low - RESCALE_OFFSET - float(np.mean(trained_low))) <= CT_AIR_TOLERANCE_HU
        shifted_body = (
            envelope.percentile_50_min - CT_AIR_TOLERANCE_HU <= median <= envelope.percentile_50_max + CT_AIR_TOLERANCE_HU
        )
        if shifted_air and shifted_body:
            return [f"air sits near {low:.0f} instead of about {CT_AIR_HU:.0f} HU: stored values without the rescale "
                    f"(RescaleIntercept -{RESCALE_OFFSET:.0f}) were given to a CT model"]  # fmt: skip
        return [f"intensities are implausible for CT: the lowest 1% lies at {low:.4g}, the training scans had air at "
                f"{trained_low[0]:.0f} to {trained_low[1]:.0f} HU (an MR or other non-CT volume?)"]  # fmt: skip
    if low <= CT_AIR_HU + CT_AIR_TOLERANCE_HU:
        return [f"values down to {low:.0f} look like CT Hounsfield units (air near {CT_AIR_HU:.0f}); this model was "
                f"trained on {envelope.modality}"]  # fmt: skip
    return []


def _range_reasons(what: str, unit: str, values, low, high, factor: float) -> list[str]:
    reasons = []
    for axis, (value, a, b) in enumerate(zip(values, low, high)):
        if value > factor * b or value < a / factor:
            side = "above" if value > factor * b else "below"
            reasons.append(
                f"{what} {value:.4g} {unit} along axis {'xyz'[axis]} (RAS) is more than {factor:g}x {side} the training "
                f"range {_range(a, b, unit)}"
            )
    return reasons


def _range(low: float, high: float, unit: str) -> str:
    if not np.isfinite(high):
        return f"(at least {low:.4g} {unit})"
    return f"({low:.4g}-{high:.4g} {unit})" if low > 0 else f"(at most {high:.4g} {unit})"
