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
    """``std * sqrt(dim)``: 1 for healthy outputs, 0 for collapse (but see :func:`two_point_ratio`)."""
    return std * math.sqrt(dim)


@torch.no_grad()
def top_direction_share(z: torch.Tensor) -> float:
    """Share of the l2-normalised batch ``z`` (N, d) that lies along its first principal axis:
    the largest eigenvalue of the Gram matrix over its trace (N). 1 when every output is on one
    line (a constant, or two opposite points). Measured on Fashion-MNIST (ResNet-18, batch 256,
    docs/run_logs/stopgrad_gpu_5ep): 0.47-0.80 over 5 epochs of a healthy run, 0.98-1 once the
    run without stop-gradient has collapsed.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"expected z of shape (N >= 2, d), got {tuple(z.shape)}")
    zn = F.normalize(z.float(), dim=1)
    gram = (zn @ zn.T).cpu()
    return (torch.linalg.eigvalsh(gram)[-1] / gram.trace()).item()


def two_point_ratio(batch: int, opposite: int = 1) -> float:
    """``std * sqrt(d)`` of an output that takes two opposite values, ``opposite`` of ``batch``
    samples on one side: 2 sqrt(p (1 - p)), p = opposite / batch.

    Why the std does not reach 0 here: when the projector ends in an affine-free BatchNorm that
    uses the batch's statistics (the reference architecture), each channel has mean 0 over the
    batch, so the l2-normalised outputs cannot all point one way. A collapsed output then takes
    one direction for all but a few samples and the opposite one for those (the only two-valued
    output with zero channel means), and its std sits at this level: 0.125 for one of 256. The
    level grows with ``opposite`` (1 at half the batch), so the std alone can miss a collapse;
    :func:`top_direction_share` cannot.
    """
    if not 0 < opposite < batch:
        raise ValueError(f"expected 0 < opposite < batch, got opposite={opposite}, batch={batch}")
    p = opposite / batch
    return 2 * math.sqrt(p * (1 - p))


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
