"""Every config of simsiam-hub: typed YAML (OmegaConf structured configs) with ``key=value``
overrides, for pretraining (:class:`PretrainConfig`) and linear evaluation (:class:`LinclsConfig`).

A config file holds any subset of a schema's keys (``_base_: other.yaml`` inherits another);
unknown keys, wrong types and values out of range are refused by their full dotted name. A
config is given by path, or by the name of a shipped one (``imagenet_resnet50_100ep``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .data import DEFAULT_IMAGE_SIZE
from .data.datasets import DATASETS
from .errors import UsageError
from .eval import KNN_K, KNN_TEMPERATURE
from .models import ARCHS, PROJ_LAYERS
from .resources import shipped_configs

T = TypeVar("T")
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
LR_SCHEDULES = ("epoch", "step")  # when the cosine lr changes: at epoch starts (the reference) | every step


class ConfigError(UsageError):
    """A config file or override that does not fit its schema."""


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config value {key}={value!r} is invalid: expected {expected}")


def _one_of(key: str, value: Any, choices: tuple) -> None:
    _check(value in choices, key, value, "one of " + ", ".join(map(repr, choices)))


def _positive_or_null(key: str, value) -> None:
    _check(value is None or value > 0, key, value, "a positive integer or null")


def _amp(key: str, value: str) -> str:
    if value in ("False", "false", "none"):  # YAML reads a bare `off` as false
        value = "off"
    _one_of(key, value, AMP_CHOICES)
    return value


# --- shared parts ------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """The data every command reads: which set, where, at what size."""

    # imagefolder | fashion_mnist | cifar10 | synthetic, or an unlabelled/any source (data/sources.py):
    # folder (images at any depth) | filelist (a text file of paths) | webdataset (tar shards) | hf (Hugging Face)
    dataset: str = "imagefolder"
    # dataset folder; None: the dataset's default location. folder: DIR; filelist: LIST;
    # webdataset: a shard pattern 'shards/train-{000000..000127}.tar'; hf: ORG/NAME, a save_to_disk or parquet folder
    root: Optional[str] = None
    image_size: int = DEFAULT_IMAGE_SIZE  # crop size (pretraining: of both views)
    train_subset: Optional[int] = None  # use this many training images (a seeded draw)
    num_workers: int = 8  # data-loader processes per rank (0: load in the main process)
    synthetic_size: int = 512  # images in the synthetic set (tests)
    download: bool = False  # fashion_mnist, cifar10: let torchvision download missing files
    rescan: bool = False  # folder, webdataset: list the folder / index the shards again (else the cached index)
    split: str = "train"  # hf: the split trained on (the k-NN bank)
    val_split: str = "validation"  # hf: the held-out split (k-NN queries, lincls val)
    image_column: Optional[str] = None  # hf: None: the first Image feature
    label_column: Optional[str] = None  # hf: None: the first ClassLabel feature (none: unlabelled)
    revision: Optional[str] = None  # hf: a Hub dataset's branch, tag or commit
    license: Optional[str] = None  # the data's licence, for model cards (None: the dataset's known one, else unknown)

    def __post_init__(self):
        _one_of("data.dataset", self.dataset, tuple(DATASETS))
        _check(self.image_size >= 8, "data.image_size", self.image_size, "an integer >= 8")
        _positive_or_null("data.train_subset", self.train_subset)
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, "an integer >= 0")
        _check(self.synthetic_size > 0, "data.synthetic_size", self.synthetic_size, "a positive integer")


# --- pretraining -------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    small_stem: bool = False  # 3x3/1 stem and no max-pool, for 28-32 px images
    dim: int = 2048  # projector output (and predictor in/out) width
    pred_dim: int = 512  # predictor bottleneck width
    stop_gradient: bool = True  # False: the paper's collapse ablation
    proj_layers: int = 3  # Linear layers in the projector: 3 (ImageNet, the official code) | 2 (the paper's CIFAR)

    def __post_init__(self):
        _one_of("model.arch", self.arch, ARCHS)
        _one_of("model.proj_layers", self.proj_layers, PROJ_LAYERS)
        _check(self.dim > 0, "model.dim", self.dim, "a positive integer")
        _check(self.pred_dim > 0, "model.pred_dim", self.pred_dim, "a positive integer")


@dataclass
class PretrainDataConfig(DataConfig):
    min_scale: float = 0.2  # RandomResizedCrop scale range is (min_scale, 1.0)
    blur_prob: float = 0.5  # probability of the Gaussian blur (the MoCo v2 recipe: 0.5)
    fast_augment: bool = False  # the same augmentation draws, pixels computed faster (fast_augment.py)
    max_bad_images: int = 100  # unreadable images skipped (and logged) before the run stops
    # loader: the whole augmentation on the data-loader workers; device: they crop, and the training
    # device (the GPU) does jitter, grayscale, blur, flip and normalisation in batches (device_augment.py)
    augment_on: str = "loader"

    def __post_init__(self):
        super().__post_init__()
        _check(0.0 < self.min_scale <= 1.0, "data.min_scale", self.min_scale, "a number in (0, 1]")
        _check(0.0 <= self.blur_prob <= 1.0, "data.blur_prob", self.blur_prob, "a probability in [0, 1]")
        _check(self.max_bad_images >= 0, "data.max_bad_images", self.max_bad_images, "an integer >= 0")
        _one_of("data.augment_on", self.augment_on, ("loader", "device"))


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
        _one_of("optim.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check(
            self.lr_schedule == "step" or self.warmup_epochs == 0,
            "optim.warmup_epochs",
            self.warmup_epochs,
            "0 with optim.lr_schedule=epoch (a warm-up set per epoch would hold the first epoch at lr 0): use optim.lr_schedule=step",
        )
        _check(self.epochs > 0, "optim.epochs", self.epochs, "a positive integer")
        _check(self.batch_size > 0, "optim.batch_size", self.batch_size, "a positive integer")
        _check(self.base_lr > 0, "optim.base_lr", self.base_lr, "a positive number")
        _check(0.0 <= self.momentum < 1.0, "optim.momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        _check(
            0 <= self.warmup_epochs < self.epochs, "optim.warmup_epochs", self.warmup_epochs, "a number in [0, epochs)"
        )


@dataclass
class KnnDataConfig:
    """A labelled set for the k-NN monitor when the training data has no labels (or another one
    is wanted): what is set here replaces the same ``data.`` key (None: keep data's)."""

    dataset: Optional[str] = None  # None: the training data itself (when it is labelled)
    root: Optional[str] = None
    split: Optional[str] = None  # hf: the bank's split
    val_split: Optional[str] = None  # hf: the queries' split
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    revision: Optional[str] = None

    def __post_init__(self):
        if self.dataset is not None:
            _one_of("monitor.knn_data.dataset", self.dataset, tuple(DATASETS))


@dataclass
class MonitorConfig:
    knn_every_epochs: int = 1  # 0: never
    knn_every_steps: int = 0  # 0: only at epoch ends
    knn_k: int = KNN_K
    knn_temperature: float = KNN_TEMPERATURE
    knn_bank_size: Optional[int] = None  # training images in the kNN memory bank (None: all)
    knn_query_size: Optional[int] = None  # held-out images classified (None: all)
    amp: str = "off"  # the k-NN features' precision: off (fp32, the default) | auto | bf16 | fp16
    collapse_warn_ratio: float = 0.2  # warn when std(l2-normalised z) * sqrt(dim) falls below this,
    # or when more than this share of l2-normalised z lies on one line: the collapse that the
    # projector's output BatchNorm allows keeps the std ratio at 2 sqrt(p(1-p)), 0.25 at batch 64
    # (monitor.two_point_ratio); healthy runs measured 0.47-0.80, collapsed ones 0.98-1 (docs/run_logs/stopgrad_gpu_5ep).
    collapse_warn_share: float = 0.95
    knn_data: KnnDataConfig = field(default_factory=KnnDataConfig)  # the k-NN monitor's labelled set

    def __post_init__(self):
        self.amp = _amp("monitor.amp", self.amp)
        _check(self.knn_every_epochs >= 0, "monitor.knn_every_epochs", self.knn_every_epochs, "an integer >= 0")
        _check(self.knn_every_steps >= 0, "monitor.knn_every_steps", self.knn_every_steps, "an integer >= 0")
        _check(self.knn_k > 0, "monitor.knn_k", self.knn_k, "a positive integer")
        _check(self.knn_temperature > 0, "monitor.knn_temperature", self.knn_temperature, "a positive number")
        _check(
            0 < self.collapse_warn_share <= 1,
            "monitor.collapse_warn_share",
            self.collapse_warn_share,
            "a number in (0, 1]",
        )
        _positive_or_null("monitor.knn_bank_size", self.knn_bank_size)
        _positive_or_null("monitor.knn_query_size", self.knn_query_size)


@dataclass
class RunConfig:
    output_dir: str = "runs/simsiam"
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on GPU and native-bf16 CPUs: docs/run_logs/bf16_training/) | bf16 | fp16 | off
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic kernels (exact resume checks)
    checkpoint_every_steps: int = 0  # 0: only at epoch ends
    keep_checkpoints: int = 2  # the newest checkpoints of this run kept (older ones are deleted)
    log_every_steps: int = 20
    max_steps: Optional[int] = None  # stop early after this many optimizer steps (smoke runs)
    init_from: Optional[str] = None  # start from a simsiam.safetensors (or training checkpoint)
    tensorboard: bool = True
    progress: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self):
        self.amp = _amp("run.amp", self.amp)
        _check(
            self.checkpoint_every_steps >= 0,
            "run.checkpoint_every_steps",
            self.checkpoint_every_steps,
            "an integer >= 0",
        )
        _check(self.keep_checkpoints >= 1, "run.keep_checkpoints", self.keep_checkpoints, "an integer >= 1")
        _check(self.log_every_steps > 0, "run.log_every_steps", self.log_every_steps, "a positive integer")
        _positive_or_null("run.max_steps", self.max_steps)


@dataclass
class PretrainConfig:
    KIND: ClassVar[str] = "pretrain"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    run: RunConfig = field(default_factory=RunConfig)


# --- linear evaluation -------------------------------------------------------------------------

LINCLS_OPTIMIZERS = ("lars", "sgd")
LINCLS_PROTOCOLS = ("reference", "logreg")  # main_lincls's recipe | the converged probe (simsiam_hub.eval.probe)


@dataclass
class LinclsDataConfig(DataConfig):
    min_scale: float = 0.08  # train RandomResizedCrop scale (min_scale, 1); the reference: 0.08
    val_subset: Optional[int] = None  # evaluate on this many val images (seeded draw; None: all)
    cache_features: bool = False  # true: train on stored un-augmented features (see lincls.py)
    name: Optional[str] = None  # dataset name in results (None: the dataset, or the ImageFolder's folder)

    def __post_init__(self):
        super().__post_init__()
        _check(0.0 < self.min_scale <= 1.0, "data.min_scale", self.min_scale, "a number in (0, 1]")
        _positive_or_null("data.val_subset", self.val_subset)


@dataclass
class LinclsOptimConfig:
    epochs: int = 90
    batch_size: int = 4096  # global, over all ranks
    base_lr: float = 0.1  # lr = base_lr * batch_size / 256
    optimizer: str = "lars"  # lars (the reference) | sgd
    momentum: float = 0.9
    weight_decay: float = 0.0
    trust_coefficient: float = 0.001  # LARS
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay (the reference has none)

    def __post_init__(self):
        _check(self.epochs > 0, "optim.epochs", self.epochs, "a positive integer")
        _check(self.batch_size > 0, "optim.batch_size", self.batch_size, "a positive integer")
        _check(self.base_lr > 0, "optim.base_lr", self.base_lr, "a positive number")
        _one_of("optim.optimizer", self.optimizer, LINCLS_OPTIMIZERS)
        _check(0.0 <= self.momentum < 1.0, "optim.momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        _check(self.trust_coefficient > 0, "optim.trust_coefficient", self.trust_coefficient, "a positive number")
        _check(
            0 <= self.warmup_epochs < self.epochs, "optim.warmup_epochs", self.warmup_epochs, "a number in [0, epochs)"
        )


@dataclass
class LinclsRunConfig:
    output_dir: str = "runs/lincls"
    seed: int = 0
    amp: str = "off"  # backbone forward: off (fp32, the default: bf16 loses the small differences between images) | auto | bf16 | fp16
    channels_last: bool = True
    eval_every_epochs: int = 1  # evaluate on val every N epochs (and always after the last)
    eval_batch_size: int = 256  # feature extraction batch
    stop_after_epochs: Optional[int] = None  # stop early after this many epochs in total (the schedule is unchanged)
    progress: bool = True

    def __post_init__(self):
        self.amp = _amp("run.amp", self.amp)
        _check(self.eval_every_epochs > 0, "run.eval_every_epochs", self.eval_every_epochs, "a positive integer")
        _check(self.eval_batch_size > 0, "run.eval_batch_size", self.eval_batch_size, "a positive integer")
        _positive_or_null("run.stop_after_epochs", self.stop_after_epochs)


@dataclass
class LinclsConfig:
    KIND: ClassVar[str] = "lincls"
    data: LinclsDataConfig = field(default_factory=LinclsDataConfig)
    optim: LinclsOptimConfig = field(default_factory=LinclsOptimConfig)  # the reference protocol's
    run: LinclsRunConfig = field(default_factory=LinclsRunConfig)
    protocol: str = "reference"  # reference (main_lincls) | logreg (the converged probe; needs data.cache_features)

    def __post_init__(self):
        _one_of("protocol", self.protocol, LINCLS_PROTOCOLS)
        _check(
            self.protocol != "logreg" or self.data.cache_features,
            "data.cache_features",
            self.data.cache_features,
            "true with protocol=logreg (the probe fits features computed once, un-augmented)",
        )


# --- reading configs ---------------------------------------------------------------------------


def resolve_config(ref: str | Path, kind: str) -> Path:
    """A config file: ``ref`` itself when it is a file, else the shipped config of that name
    (``imagenet_resnet50_100ep``, ``imagenet_resnet50_100ep.yaml`` or the checkout-relative
    ``configs/pretrain/imagenet_resnet50_100ep.yaml``, which then works from any folder)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    shipped = shipped_configs(kind)
    by_name = path.stem if path.suffix == ".yaml" else path.name
    if by_name in shipped and (path.parent == Path(".") or path.parent.name == kind):
        return shipped[by_name]
    raise ConfigError(
        f"config {str(ref)!r} not found: expected a YAML file or the name of a shipped {kind} config ({', '.join(shipped)})"
    )


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | tuple = ()) -> T:
    """Merge a YAML file (a path or a shipped config's name) and ``a.b=value`` overrides onto
    ``schema``'s defaults, then validate."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.epochs=10)")
    try:
        cfg = OmegaConf.structured(schema)
        if path is not None:
            cfg = OmegaConf.merge(cfg, _load_yaml_with_base(resolve_config(path, schema.KIND)))
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = str(err).splitlines()[0]
        if "not in" in reason and key:
            raise ConfigError(f"unknown config key {key!r} ({reason})") from None
        raise ConfigError(f"config key {key!r}: {reason}" if key else f"bad config: {reason}") from None


def _load_yaml_with_base(path: Path, referrer: Path | None = None, depth: int = 0) -> DictConfig:
    """A YAML config; a top-level ``_base_: other.yaml`` (relative to it) is loaded first."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"{referrer}: its _base_ {path.name!r} was not found (looked for {path})")
    if depth > 8:
        raise ConfigError(f"{path}: _base_ chain deeper than 8 files (a cycle?)")
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a text file: {err}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(
            f"{path}: expected a mapping of config sections (model:, data:, ...) at the top level, found a list"
        )
    base = node.pop("_base_", None)
    if base is None:
        return node
    return OmegaConf.merge(_load_yaml_with_base(path.parent / str(base), path, depth + 1), node)


def to_dict(cfg: Any) -> dict:
    """A plain nested dict (for checkpoints, logs and model cards)."""
    return dataclasses.asdict(cfg)


def from_dict(schema: type[T], values: dict) -> T:
    """Rebuild a config stored with :func:`to_dict` (unknown keys are refused)."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except OmegaConfBaseException as err:
        raise ConfigError(f"stored config does not fit {schema.__name__}: {str(err).splitlines()[0]}") from None


def config_differences(old: dict, new: dict, prefix: str = "") -> dict[str, tuple]:
    """``{dotted key: (old value, new value)}`` for every leaf that differs between two nested dicts."""
    out = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_differences(a, b, name + "."))
        elif a != b:
            out[name] = (a, b)
    return out
