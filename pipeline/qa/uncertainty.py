"""Per-voxel uncertainty from the ensemble's members (models x test-time mirrors) and per-organ risk scores.

- Predictive entropy ``H[mean_m p_m]`` (in nats, 0 ... log C): total uncertainty of the (calibrated) averaged
  probabilities.
- Mutual information ``H[mean_m p_m] - mean_m H[p_m]`` (0 ... log C): the part that comes from the members disagreeing
  (epistemic). It is 0 when every member says the same, so with a single model and no mirroring it is 0 everywhere.

Both are accumulated member by member (two running sums, never all members at once) on the preprocessed grid and
mapped to the scan's grid by the same linear restore as the probabilities. Per organ, the mean entropy inside the
predicted organ and in its boundary band (voxels within ``BAND_VOXELS`` of its surface, both sides) scores how much the
mask should be trusted; ``evaluate`` reports it beside Dice and sorts the QC page by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BAND_VOXELS = 2


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy over axis 0 in nats, with ``0 log 0 = 0``."""
    p = np.asarray(probabilities, dtype=np.float32)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=0)


@dataclass
class MemberStats:
    """Running sums over ensemble members: the mean probabilities and the mean of the members' entropies."""

    total: np.ndarray | None = None
    entropy_total: np.ndarray | None = None
    members: int = 0

    def add(self, probabilities: np.ndarray) -> None:
        """Add one member's (C, x, y, z) probabilities."""
        h = entropy(probabilities)
        self.total = probabilities.astype(np.float32, copy=True) if self.total is None else self.total + probabilities
        self.entropy_total = h if self.entropy_total is None else self.entropy_total + h
        self.members += 1

    @property
    def mean(self) -> np.ndarray:
        """Mean probabilities over members."""
        return self.total / self.members

    def mutual_information(self) -> np.ndarray:
        """``H[mean] - mean H`` (clipped at 0 against rounding)."""
        return np.maximum(entropy(self.mean) - self.entropy_total / self.members, 0.0)


def boundary_band(mask: np.ndarray, voxels: int = BAND_VOXELS) -> np.ndarray:
    """Voxels within ``voxels`` of the mask's surface, inside and outside."""
    if not mask.any():
        return mask
    return ndimage.binary_dilation(mask, iterations=voxels) & ~ndimage.binary_erosion(mask, iterations=voxels)


def organ_uncertainty(entropy_map: np.ndarray, label_map: np.ndarray, labels: dict[int, str]) -> dict[str, dict[str, float]]:
    """Per organ: mean entropy inside the predicted organ and in its boundary band (0 for an absent organ)."""
    scores = {}
    for value, name in labels.items():
        organ = label_map == value
        band = boundary_band(organ)
        scores[name] = {
            "entropy_inside": float(entropy_map[organ].mean()) if organ.any() else 0.0,
            "entropy_boundary": float(entropy_map[band].mean()) if band.any() else 0.0,
        }
    return scores
