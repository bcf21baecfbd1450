"""A ResNet-50 backbone as a Detectron2 R50-C4 weights file: pure tensor renames, no detectron2 import.

The renames are MoCo's ``detection/convert-pretrain-to-detectron2.py`` (facebookresearch/moco,
commit 7397dfe): ``layerN`` -> ``res{N+1}``, ``bnK`` -> ``convK.norm``, ``downsample.0`` ->
``shortcut``, ``downsample.1`` -> ``shortcut.norm``, and the stem's tensors get ``stem.``. The
file is the pickle Detectron2's ``DetectionCheckpointer`` reads for ``.pkl`` weights:
``{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}``; the
matching heuristics map ``res5.*`` onto the C4 model's ``roi_heads.res5.*`` and the rest onto
``backbone.*``. This is the one pickle simsiam-hub writes (Detectron2's loader needs it); it
never reads one.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from ..errors import UsageError
from ..fileio import atomic_path
from ..hub.loading import load_backbone_state_dict
from ..hub.weights import check_backbone

__all__ = ["ConversionError", "detectron2_name", "convert_to_detectron2", "convert_source"]

log = logging.getLogger(__name__)

AUTHOR = "simsiam-hub"


class ConversionError(UsageError):
    """An output name Detectron2 would not read as a converted backbone."""


def detectron2_name(name: str) -> str:
    """The Detectron2 R50-C4 name of a torchvision ResNet tensor (MoCo's renames)."""
    if "layer" not in name:
        name = "stem." + name
    for t in (1, 2, 3, 4):
        name = name.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        name = name.replace(f"bn{t}", f"conv{t}.norm")
    name = name.replace("downsample.0", "shortcut")
    return name.replace("downsample.1", "shortcut.norm")


def convert_to_detectron2(state_dict: dict[str, torch.Tensor]) -> dict:
    """The Detectron2 weights object for a ResNet-50 backbone under torchvision names (no ``fc``).

    The state dict must be the full, fixed set of ResNet-50 backbone tensors with their
    shapes (:func:`simsiam_hub.hub.weights.check_backbone`; BatchNorm ``num_batches_tracked``
    counters may be absent). Floating tensors become float32 numpy arrays.

    Raises:
        simsiam_hub.hub.weights.WeightsError: naming the missing, unexpected or misshapen tensors.
    """
    backbone = check_backbone(state_dict, "resnet50", where="the backbone to convert")
    model = {}
    for name, tensor in backbone.items():
        t = tensor.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        model[detectron2_name(name)] = t.numpy()
    return {"model": model, "__author__": AUTHOR, "matching_heuristics": True}


def write_detectron2(obj: dict, path: str | Path) -> Path:
    """Write a :func:`convert_to_detectron2` object atomically as the pickle Detectron2 loads."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def convert_source(source: str | Path, out: str | Path, revision: str | None = None) -> Path:
    """Convert a ResNet-50 backbone from anywhere :func:`simsiam_hub.hub.loading.load_backbone_state_dict`
    reads (a Hub repo id at ``revision``, a model folder, a ``.safetensors`` file, a training,
    official SimSiam/MoCo or torchvision checkpoint) into the Detectron2 file ``out``."""
    out = Path(out)
    if out.suffix != ".pkl":
        raise ConversionError(
            f"the Detectron2 weights file must end in .pkl (Detectron2 picks its loader by suffix), got {out}"
        )
    obj = convert_to_detectron2(load_backbone_state_dict(source, revision))
    write_detectron2(obj, out)
    log.info("wrote %d tensors from %s to %s", len(obj["model"]), source, out)
    return out
