"""``decisions.json``: what cross-validation decided, read by ``infer`` and ``predict``."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import InvalidInputError
from pipeline.inference.postprocess import PostprocessingDecision


class Decisions(BaseModel):
    """The model folders to ensemble (every trained fold of the chosen configurations), where to keep the largest
    component, and the out-of-fold scores behind the choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    configurations: tuple[str, ...]
    models: tuple[Path, ...]
    postprocessing: dict
    folds: tuple[int, ...]
    cases: int
    scores: dict[str, dict[str, float]]
    temperature: float = 1.0  # of the chosen ensemble: infer and predict apply it (pipeline.qa.calibration)
    temperatures: dict[str, float] = {}  # every model alone, and "chosen"
    calibration: dict[str, float] = {}  # out-of-fold ECE, Brier and NLL before and after the chosen temperature
    uncertainty: dict[str, float] = {}  # out-of-fold Spearman rho of boundary entropy against Dice
    object_counts: dict = {}  # structures with a fixed number of objects in the training labels (where steps were tried)
    one_object: dict = Field({}, exclude=True)  # what object_counts replaced, in files written before it (read, never written)

    @property
    def postprocessing_decision(self) -> PostprocessingDecision:
        return PostprocessingDecision.from_json(self.postprocessing)


def read_decisions(path: Path) -> Decisions:
    """Read ``decisions.json``.

    Raises:
        InvalidInputError: missing (run `segpipe crossval`, or name the models) or invalid.
    """
    try:
        return Decisions.model_validate(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise InvalidInputError(path, "no cross-validation decisions: run `segpipe crossval`, or name the models") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(path, f"unreadable decisions ({exc})") from None
