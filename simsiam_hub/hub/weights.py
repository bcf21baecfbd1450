"""State-dict formats: our checkpoints, safetensors files, official SimSiam / MoCo checkpoints.

Every reader ends in the same two shapes:

- the *backbone*: a torchvision ResNet's tensors under torchvision (= timm) names, without
  ``fc`` (what ``model.safetensors`` holds and what detection transfer converts);
- the *whole model*: :class:`~simsiam_hub.models.SimSiam`'s ``encoder.*`` (projector at
  ``encoder.fc.*``) and ``predictor.*`` (what ``simsiam.safetensors`` holds, to continue
  pretraining).

Layouts read (pickles always with ``torch.load(weights_only=True)``, never unpickled freely):

=========================  ==============================================================
our training checkpoint    ``simsiam_hub.engine`` format, ``model``: ``encoder.*``, ``predictor.*``
official SimSiam           ``checkpoint_XXXX.pth.tar``: ``state_dict``: ``module.encoder.*``,
                           ``module.predictor.*`` (optimizer state is dropped)
MoCo v1/v2                 ``state_dict``: ``module.encoder_q.*`` (``encoder_k``/queue dropped)
torchvision                a plain ResNet state dict (``conv1.weight``, ``layer1.*``, ``fc.*``)
safetensors                ``model.safetensors`` (backbone) or ``simsiam.safetensors`` (whole)
=========================  ==============================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import __version__
from ..checkpoint import PRETRAIN_FORMAT, load_checkpoint, safe_torch_load
from ..errors import SimsiamHubError
from ..fileio import atomic_path
from ..models import build_backbone

__all__ = [
    "SIMSIAM_FILE",
    "WeightsError",
    "LoadedWeights",
    "read_safetensors",
    "split_state_dict",
    "infer_arch",
    "check_backbone",
    "read_weights",
    "load_simsiam_state_dict",
    "backbone_metadata",
    "save_safetensors",
]

SIMSIAM_FILE = "simsiam.safetensors"  # the whole model in a model folder (hub.folder names the other files)
# (bottleneck blocks?, blocks per stage) -> torchvision arch; the ones models.ARCHS builds.
_ARCH_BY_LAYOUT = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
}
EXPECTED_LAYOUTS = (
    "simsiam-hub training checkpoint (format/config/model), "
    "'module.encoder.*'+'module.predictor.*' (official SimSiam), 'module.encoder_q.*' (MoCo), "
    "'encoder.*' (SimSiam without 'module.'), or a torchvision ResNet ('conv1.*', 'layer1.*', ...)"
)


class WeightsError(SimsiamHubError, ValueError):
    """A weights file we cannot read, of an unknown layout, or of another architecture."""


@dataclass
class LoadedWeights:
    """What a weights file holds, normalised.

    ``backbone``: torchvision names, no ``fc``. ``simsiam``: the whole model (``encoder.*``,
    ``predictor.*``) when the file has it, else None. ``kind``: the layout read (``simsiam-hub``,
    ``simsiam-official``, ``moco``, ``torchvision``, ``safetensors``). ``info``: what the file
    says about itself (``config`` for our checkpoints, ``epoch``, safetensors ``metadata``).
    """

    kind: str
    backbone: dict[str, torch.Tensor]
    simsiam: dict[str, torch.Tensor] | None
    arch: str
    small_stem: bool
    info: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        if self.kind == "moco":
            return "moco"
        if self.kind == "torchvision":
            return "supervised"
        return self.info.get("metadata", {}).get("method", "simsiam")


# --- reading ----------------------------------------------------------------------------


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; a truncated or corrupt one is refused."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        size = path.stat().st_size
        raise WeightsError(
            f"{path} is not a readable safetensors file ({size} bytes; truncated or corrupt?): {err}"
        ) from None


def _prefixes(keys, depth: int = 1, limit: int = 8) -> list[str]:
    found = sorted({".".join(k.split(".")[:depth]) + "." for k in keys})
    return found[:limit] + ([f"... ({len(found) - limit} more)"] if len(found) > limit else [])


def _check_tensors(state: dict, where: str) -> None:
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{where}: expected a state dict of tensors, found {type(value).__name__} at key {key!r}"
            )


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def split_state_dict(state: dict[str, torch.Tensor], where: str = "state dict") -> tuple[str, dict, dict | None]:
    """Recognise a state dict's layout: ``(kind, backbone, whole SimSiam model or None)``.

    A ``module.`` prefix (DataParallel/DDP) is dropped first. The backbone is the ResNet
    trunk without ``fc`` (for SimSiam and MoCo, ``fc`` is the projection head).
    """
    _check_tensors(state, where)
    if state and all(k.startswith("module.") for k in state):
        state = _strip(state, "module.")
    if any(k.startswith("encoder_q.") for k in state):
        encoder = _strip(state, "encoder_q.")
        return "moco", {k: v for k, v in encoder.items() if not k.startswith("fc.")}, None
    if any(k.startswith("encoder.") for k in state):
        encoder = _strip(state, "encoder.")
        backbone = {k: v for k, v in encoder.items() if not k.startswith("fc.")}
        has_head = any(k.startswith("fc.") for k in encoder) and any(k.startswith("predictor.") for k in state)
        whole = {k: v for k, v in state.items() if k.startswith(("encoder.", "predictor."))} if has_head else None
        return "simsiam", backbone, whole
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in state):
        return "torchvision", {k: v for k, v in state.items() if not k.startswith("fc.")}, None
    raise WeightsError(f"{where} has an unknown layout: expected {EXPECTED_LAYOUTS}; found prefixes {_prefixes(state)}")


def infer_arch(backbone: dict[str, torch.Tensor], where: str = "state dict") -> tuple[str, bool]:
    """``(arch, small_stem)`` of a torchvision-named ResNet backbone, from its keys and shapes."""
    bottleneck = "layer1.0.conv3.weight" in backbone
    blocks = tuple(len({k.split(".")[1] for k in backbone if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    arch = _ARCH_BY_LAYOUT.get((bottleneck, blocks))
    if arch is None:
        known = ", ".join(f"{a} ({'bottleneck' if b else 'basic'} blocks {n})" for (b, n), a in _ARCH_BY_LAYOUT.items())
        raise WeightsError(
            f"{where} is not a ResNet this library builds: expected one of {known}; "
            f"found {'bottleneck' if bottleneck else 'basic'} blocks {blocks}"
        )
    conv1 = backbone.get("conv1.weight")
    return arch, conv1 is not None and conv1.shape[-1] == 3


def _reference_shapes(module_fn) -> dict[str, tuple]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in module_fn().state_dict().items()}


def check_backbone(
    backbone: dict[str, torch.Tensor], arch: str, small_stem: bool = False, where: str = "state dict"
) -> dict[str, torch.Tensor]:
    """``backbone`` checked key by key and shape by shape against a freshly built ``arch``.

    BatchNorm ``num_batches_tracked`` counters that old checkpoints lack are added (zero),
    so that the result loads strictly into torchvision and timm. Anything else that does not
    match is refused with the first mismatched keys and shapes.
    """
    expected = _reference_shapes(lambda: build_backbone(arch, small_stem=small_stem))
    backbone = dict(backbone)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in backbone:
            backbone[key] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in expected if k not in backbone]
    unexpected = [k for k in backbone if k not in expected]
    shapes = [
        f"{k}: expected {list(expected[k])}, found {list(backbone[k].shape)}"
        for k in expected
        if k in backbone and tuple(backbone[k].shape) != expected[k]
    ]
    if missing or unexpected or shapes:
        stem = " with the small stem" if small_stem else ""
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (first: {missing[:4]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (first: {unexpected[:4]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (first: {'; '.join(shapes[:3])})")
        raise WeightsError(f"{where} does not fit a {arch} backbone{stem}: " + ", ".join(parts))
    return backbone


def read_weights(path: str | Path) -> LoadedWeights:
    """Read any weights file this library knows (see the module docstring), checked."""
    path = Path(path)
    info: dict = {}
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
        info["metadata"] = metadata
        kind, backbone, whole = split_state_dict(state, str(path))
        kind = "safetensors"
    else:
        obj = safe_torch_load(path, error=WeightsError, mmap=True)
        if isinstance(obj, dict) and obj.get("format") == PRETRAIN_FORMAT:
            ckpt = load_checkpoint(path)  # validates the version
            info = {
                k: ckpt.get(k)
                for k in ("config", "epoch", "step", "global_batch", "library_version", "metrics", "data_source")
            }
            kind, backbone, whole = split_state_dict(ckpt["model"], str(path))
            kind = "simsiam-hub"
        else:
            state = obj
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
                state = obj["state_dict"]
                info = {k: obj[k] for k in ("epoch", "arch") if k in obj and isinstance(obj[k], (int, float, str))}
            if not isinstance(state, dict):
                raise WeightsError(
                    f"{path}: expected a state dict (or a checkpoint with 'state_dict'), found {type(state).__name__}"
                )
            kind, backbone, whole = split_state_dict(state, str(path))
            if kind == "simsiam":
                kind = "simsiam-official"
    arch, small_stem = infer_arch(backbone, str(path))
    backbone = check_backbone(backbone, arch, small_stem, str(path))
    return LoadedWeights(kind, backbone, whole, arch, small_stem, info)


def load_simsiam_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The whole SimSiam model (``encoder.*``, ``predictor.*``) from a ``simsiam.safetensors``,
    a model folder that has one, a training checkpoint, or an official SimSiam checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / SIMSIAM_FILE
    loaded = read_weights(path)
    if loaded.simsiam is None:
        raise WeightsError(
            f"{path} holds a backbone only ({loaded.kind}): continuing pretraining needs the whole model, "
            f"expected a {SIMSIAM_FILE}, a training checkpoint or an official SimSiam checkpoint"
        )
    return loaded.simsiam


# --- writing ----------------------------------------------------------------------------


def backbone_metadata(
    *,
    arch: str,
    small_stem: bool,
    method: str,
    epochs,
    batch_size,
    dataset: str,
    source: str,
) -> dict[str, str]:
    """The ``__metadata__`` of ``model.safetensors`` (strings only, as safetensors requires)."""
    values = {
        "format": "pt",
        "arch": arch,
        "small_stem": small_stem,
        "method": method,
        "epochs": epochs,
        "batch_size": batch_size,
        "dataset": dataset,
        "source": source,
        "library_version": f"simsiam-hub {__version__}",
    }
    return {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in values.items()}


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write ``state`` atomically as safetensors. Tensors are made contiguous (channels_last
    weights from training are not) and cloned off any shared storage."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)
