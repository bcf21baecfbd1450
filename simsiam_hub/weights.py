"""State-dict formats: our checkpoints, safetensors files, official SimSiam / MoCo checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch


def load_simsiam_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The whole SimSiam model (``encoder.*``, ``predictor.*``) from a ``simsiam.safetensors``
    or a training checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    from .engine import load_checkpoint

    return load_checkpoint(path)["model"]
