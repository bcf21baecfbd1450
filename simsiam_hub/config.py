"""Typed YAML configs with ``key=value`` overrides (OmegaConf structured configs).

A config file holds any subset of a schema's keys; unknown keys, wrong types and values
out of range are refused by their full dotted name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import SimsiamHubError

T = TypeVar("T")


class ConfigError(SimsiamHubError, ValueError):
    """A config file or override that does not fit its schema."""


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config value {key}={value!r} is invalid: expected {expected}")


def _one_of(key: str, value: Any, choices: tuple) -> None:
    _check(value in choices, key, value, "one of " + ", ".join(map(repr, choices)))


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    small_stem: bool = False  # 3x3/1 stem and no max-pool, for 28-32 px images
    dim: int = 2048  # projector output (and predictor in/out) width
    pred_dim: int = 512  # predictor bottleneck width
    stop_gradient: bool = True  # False: the paper's collapse ablation
    proj_layers: int = 3  # Linear layers in the projector: 3 (ImageNet, the official code) | 2 (the paper's CIFAR)

    def __post_init__(self):
        from .models import ARCHS, PROJ_LAYERS

        _one_of("model.arch", self.arch, ARCHS)
        _one_of("model.proj_layers", self.proj_layers, PROJ_LAYERS)
        _check(self.dim > 0, "model.dim", self.dim, "a positive integer")
        _check(self.pred_dim > 0, "model.pred_dim", self.pred_dim, "a positive integer")


@dataclass
class DataConfig:
    dataset: str = "imagefolder"  # imagefolder | fashion_mnist | synthetic
    root: Optional[str] = None  # dataset folder; None: the dataset's default location
    image_size: int = 224  # crop size of both views
    train_subset: Optional[int] = None  # pretrain on this many training images (seeded draw)
    num_workers: int = 8  # data-loader processes per rank (0: load in the main process)
    min_scale: float = 0.2  # RandomResizedCrop scale range is (min_scale, 1.0)
    blur_prob: float = 0.5  # probability of the Gaussian blur (the MoCo v2 recipe: 0.5)
    fast_augment: bool = False  # the same augmentation draws, pixels computed faster (fast_augment.py)
    synthetic_size: int = 512  # images in the synthetic set (tests)

    def __post_init__(self):
        from .data import DATASETS

        _one_of("data.dataset", self.dataset, DATASETS)
        _check(self.image_size >= 8, "data.image_size", self.image_size, "an integer >= 8")
        _check(self.train_subset is None or self.train_subset > 0, "data.train_subset", self.train_subset, "a positive integer or null")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, "an integer >= 0")
        _check(0.0 < self.min_scale <= 1.0, "data.min_scale", self.min_scale, "a number in (0, 1]")
        _check(0.0 <= self.blur_prob <= 1.0, "data.blur_prob", self.blur_prob, "a probability in [0, 1]")
        _check(self.synthetic_size > 0, "data.synthetic_size", self.synthetic_size, "a positive integer")


@dataclass
class OptimConfig:
    epochs: int = 100
    batch_size: int = 256  # global, over all ranks
    base_lr: float = 0.05  # lr = base_lr * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    fix_pred_lr: bool = True  # keep the predictor at the initial lr (the reference recipe)
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay (the reference has none)
    # When the cosine lr changes (optim.py): "epoch", once at each epoch's start (the reference;
    # the last epoch is not at 0), or "step", every step (down to 0 at the end). The default is
    # what every run before this option did, so stored configs without it read back as trained.
    lr_schedule: str = "step"

    def __post_init__(self):
        from .optim import LR_SCHEDULES

        _one_of("optim.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check(
            self.lr_schedule == "step" or self.warmup_epochs == 0, "optim.warmup_epochs", self.warmup_epochs,
            "0 with optim.lr_schedule=epoch (a warm-up set per epoch would hold the first epoch at lr 0): use optim.lr_schedule=step",
        )  # fmt: skip
        _check(self.epochs > 0, "optim.epochs", self.epochs, "a positive integer")
        _check(self.batch_size > 0, "optim.batch_size", self.batch_size, "a positive integer")
        _check(self.base_lr > 0, "optim.base_lr", self.base_lr, "a positive number")
        _check(0.0 <= self.momentum < 1.0, "optim.momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        _check(0 <= self.warmup_epochs < self.epochs, "optim.warmup_epochs", self.warmup_epochs, "a number in [0, epochs)")


@dataclass
class MonitorConfig:
    knn_every_epochs: int = 1  # 0: never
    knn_every_steps: int = 0  # 0: only at epoch ends
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_bank_size: Optional[int] = None  # training images in the kNN memory bank (None: all)
    knn_query_size: Optional[int] = None  # held-out images classified (None: all)
    collapse_warn_ratio: float = 0.2  # warn when std(l2-normalised z) * sqrt(dim) falls below
    # or when more than this share of l2-normalised z lies on one line: the collapse that the
    # projector's output BatchNorm allows keeps the std ratio at 2 sqrt(p(1-p)), 0.25 at batch 64
    # (monitor.two_point_ratio); healthy runs measured 0.16-0.8, collapsed ones above 0.98
    collapse_warn_share: float = 0.95

    def __post_init__(self):
        _check(self.knn_every_epochs >= 0, "monitor.knn_every_epochs", self.knn_every_epochs, "an integer >= 0")
        _check(self.knn_every_steps >= 0, "monitor.knn_every_steps", self.knn_every_steps, "an integer >= 0")
        _check(self.knn_k > 0, "monitor.knn_k", self.knn_k, "a positive integer")
        _check(self.knn_temperature > 0, "monitor.knn_temperature", self.knn_temperature, "a positive number")
        _check(0 < self.collapse_warn_share <= 1, "monitor.collapse_warn_share", self.collapse_warn_share, "a number in (0, 1]")
        for key in ("knn_bank_size", "knn_query_size"):
            value = getattr(self, key)
            _check(value is None or value > 0, f"monitor.{key}", value, "a positive integer or null")


@dataclass
class RunConfig:
    output_dir: str = "runs/simsiam"
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on GPU and on CPUs with native bf16) | bf16 | fp16 | off
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic kernels and data order (exact resume checks)
    checkpoint_every_steps: int = 0  # 0: only at epoch ends
    keep_checkpoints: int = 2  # newest step checkpoints kept besides the epoch ones' newest
    log_every_steps: int = 20
    max_steps: Optional[int] = None  # stop early after this many optimizer steps (smoke runs)
    init_from: Optional[str] = None  # start from a simsiam.safetensors (or training checkpoint)
    tensorboard: bool = True
    progress: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self):
        if self.amp in ("False", "false", "none"):  # YAML reads a bare `off` as false
            self.amp = "off"
        _one_of("run.amp", self.amp, ("auto", "bf16", "fp16", "off"))
        _check(self.checkpoint_every_steps >= 0, "run.checkpoint_every_steps", self.checkpoint_every_steps, "an integer >= 0")
        _check(self.keep_checkpoints >= 1, "run.keep_checkpoints", self.keep_checkpoints, "an integer >= 1")
        _check(self.log_every_steps > 0, "run.log_every_steps", self.log_every_steps, "a positive integer")
        _check(self.max_steps is None or self.max_steps > 0, "run.max_steps", self.max_steps, "a positive integer or null")


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    run: RunConfig = field(default_factory=RunConfig)


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | tuple = ()) -> T:
    """Merge a YAML file and ``a.b=value`` overrides onto ``schema``'s defaults, then validate."""
    try:
        cfg = OmegaConf.structured(schema)
        if path is not None:
            cfg = OmegaConf.merge(cfg, _load_yaml_with_base(Path(path)))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.epochs=10)")
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = str(err).splitlines()[0]
        if "not in" in reason and key:
            raise ConfigError(f"unknown config key {key!r} ({reason})") from None
        raise ConfigError(f"config key {key!r}: {reason}" if key else f"bad config: {reason}") from None


def _load_yaml_with_base(path: Path, depth: int = 0):
    """A YAML config; a top-level ``_base_: other.yaml`` (relative to it) is loaded first."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if depth > 8:
        raise ConfigError(f"{path}: _base_ chain deeper than 8 files (a cycle?)")
    node = OmegaConf.load(path)
    base = node.pop("_base_", None)
    if base is None:
        return node
    return OmegaConf.merge(_load_yaml_with_base(path.parent / base, depth + 1), node)


def to_dict(cfg: Any) -> dict:
    """A plain nested dict (for checkpoints, logs and model cards)."""
    return dataclasses.asdict(cfg)


def from_dict(schema: type[T], values: dict) -> T:
    """Rebuild a config stored with :func:`to_dict` (unknown keys are refused)."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except OmegaConfBaseException as err:
        raise ConfigError(f"stored config does not fit {schema.__name__}: {str(err).splitlines()[0]}") from None
