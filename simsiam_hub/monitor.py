"""Training monitors: the collapse statistic, and small logging helpers (CSV + TensorBoard)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F


@torch.no_grad()
def std_of_l2_normalized(z: torch.Tensor) -> float:
    """Mean over channels of the per-channel std of l2-normalised ``z`` (N, d).

    The paper's collapse indicator (Sec. 4.1): about 1/sqrt(d) for healthy outputs,
    0 for a collapsed (constant) output.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"expected z of shape (N >= 2, d), got {tuple(z.shape)}")
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()


def collapse_ratio(std: float, dim: int) -> float:
    """``std * sqrt(dim)``: 1 for healthy outputs, 0 for collapse."""
    return std * math.sqrt(dim)


class CSVLog:
    """Append rows to a CSV file; on resume, rows past the resumed step are dropped first."""

    def __init__(self, path: str | os.PathLike, fields: list[str], resume_step: int | None = None):
        self.path, self.fields = Path(path), list(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(float(row.get("step") or 0)) <= resume_step]
            with open(self.path, "w", newline="") as f:
                writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)
        elif not self.path.exists() or resume_step is None:
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a log written by :class:`CSVLog`, numbers as floats (empty cells as None)."""
    def parse(value):
        if value in ("", None):
            return None
        try:
            return float(value)
        except ValueError:
            return value

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
