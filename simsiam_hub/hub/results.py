"""Evaluation results files: what `knn`, `lincls` and the detection summary write, and what
`export`/`push` put into the model card as model-index entries.

A results file is JSON: ``{"format": "simsiam-hub/eval-results", "version": 1,
"results": [EvalResult, ...]}``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import SimsiamHubError
from ..fileio import atomic_write_text

__all__ = ["ResultsError", "EvalResult", "write_results", "read_results"]

RESULTS_FORMAT = "simsiam-hub/eval-results"
RESULTS_VERSION = 1
TASKS = ("knn", "linear", "detection", "instance-segmentation")


class ResultsError(SimsiamHubError, ValueError):
    """A results file that is not one, or holds malformed entries."""


@dataclass
class EvalResult:
    task: str  # knn | linear | detection | instance-segmentation
    metric: str  # top1, top5, AP50, AP, AP75, ...
    value: float  # percent for accuracies and APs
    dataset: str  # e.g. imagenet-1k, fashion_mnist, voc07, voc0712, coco2017
    split: str = "val"
    std: Optional[float] = None  # over trials, when several were run
    num_trials: int = 1
    source: str = ""  # the model folder, repo id or checkpoint evaluated
    source_revision: Optional[str] = None
    recipe: dict = field(default_factory=dict)  # k, temperature, epochs, schedule, ...

    def __post_init__(self):
        if self.task not in TASKS:
            raise ResultsError(f"result task {self.task!r} is not one of {', '.join(TASKS)}")
        if not isinstance(self.value, (int, float)):
            raise ResultsError(f"result value for {self.task}/{self.metric} must be a number, not {self.value!r}")
        self.value = float(self.value)


def write_results(results: list[EvalResult], path: str | Path) -> Path:
    """Write ``results`` atomically as a results file."""
    payload = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "results": [dataclasses.asdict(r) for r in results],
    }
    return atomic_write_text(json.dumps(payload, indent=2) + "\n", path)


def read_results(path: str | Path) -> list[EvalResult]:
    """The entries of a results file, validated."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"results file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path} is not JSON: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != RESULTS_FORMAT:
        raise ResultsError(f"{path} is not a simsiam-hub results file: expected format={RESULTS_FORMAT!r}")
    known = {f.name for f in dataclasses.fields(EvalResult)}
    out = []
    for i, entry in enumerate(payload.get("results", [])):
        unknown = set(entry) - known
        if unknown:
            raise ResultsError(f"{path}: result {i} has unknown keys {sorted(unknown)}")
        try:
            out.append(EvalResult(**entry))
        except TypeError as err:
            raise ResultsError(f"{path}: result {i} is incomplete: {err}") from None
    return out
