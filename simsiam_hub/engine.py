"""SimSiam pretraining: one process, or DDP under torchrun, with resumable checkpoints.

The step is the reference's (two forward passes through one encoder, symmetric loss,
SGD with cosine lr); what this adds is mixed precision, channels_last, SyncBN on any
backend, atomic checkpoints with exact resume, and monitors (loss, lr, collapse std,
k-NN top-1, throughput and data wait) logged to CSV, TensorBoard and a progress bar.

A reader's map of :class:`Trainer`: ``__init__`` builds the data, the model and the optimizer
and resumes; :meth:`Trainer.run` holds the folder's lock and loops over epochs
(:meth:`~Trainer._run_epoch`), each step being :meth:`~Trainer._step`, logged by
:meth:`~Trainer._log_step`; :meth:`~Trainer._end_epoch` logs the epoch (k-NN, collapse
check) and :meth:`~Trainer.save_checkpoint` writes and prunes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import (
    CheckpointError,
    checkpoint_path,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from .config import ConfigError, PretrainConfig, config_differences, from_dict, to_dict
from .data.augment import two_crop_augmentation
from .data.datasets import (
    DatasetError,
    SeededViews,
    base_dataset,
    build_dataset,
    is_labelled,
    item_name,
    seeded_subset,
    targets_of,
)
from .data.device_augment import DeviceTwoCropsTransform
from .data.fast_augment import FastTwoCropsTransform
from .distributed import (
    DistInfo,
    ResumableSampler,
    barrier,
    cleanup_distributed,
    convert_sync_batchnorm,
)
from .errors import SimsiamHubError
from .eval.knn import extract_features, knn_accuracy, knn_datasets
from .fileio import atomic_write_text, folder_lock
from .hub.folder import SIMSIAM_FILE
from .hub.weights import load_simsiam_state_dict
from .models import PooledFeatures, SimSiam, simsiam_loss
from .monitor import CSVLog, collapse_ratio, std_of_l2_normalized, top_direction_share
from .optim import build_pretrain_optimizer, set_learning_rate
from .precision import resolve_amp
from .run_context import RunContext

log = logging.getLogger(__name__)

STEP_FIELDS = [
    "step",
    "epoch",
    "loss",
    "lr",
    "z_std",
    "z_std_ratio",
    "z_top_share",
    "images_per_s",
    "data_wait_frac",
    "bad_images",
]
EPOCH_FIELDS = [
    "step",
    "epoch",
    "loss",
    "z_std",
    "z_std_ratio",
    "z_top_share",
    "knn_top1",
    "knn_top5",
    "images_per_s",
    "seconds",
]
# Settings a resumed run may change: they decide how the run is watched, logged, stored or
# sped up, not what is computed. Any other difference from the checkpoint's config is refused.
RESUMABLE_CHANGES = (
    "data.num_workers",
    "data.root",
    "data.download",
    "data.max_bad_images",
    "data.rescan",
    "data.license",
    "monitor.",
    "run.output_dir",
    "run.progress",
    "run.tensorboard",
    "run.log_every_steps",
    "run.checkpoint_every_steps",
    "run.keep_checkpoints",
    "run.max_steps",
    "run.compile",
    "run.deterministic",
    "run.channels_last",
    "run.init_from",
)
# What a checkpoint's weights must match whatever is allowed.
MODEL_IDENTITY = (
    "model.arch",
    "model.dim",
    "model.pred_dim",
    "model.small_stem",
    "model.proj_layers",
    "optim.batch_size",
)


class NonFiniteLossError(SimsiamHubError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingStopped(SimsiamHubError, RuntimeError):
    """The run stopped on SIGINT or SIGTERM after writing a checkpoint; ``exit_code`` is the
    shell's 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class PretrainResult:
    output_dir: Path
    checkpoint: Path
    step: int
    epoch: float
    loss: float | None
    z_std: float | None
    knn_top1: float | None


class GracefulStop:
    """While active, SIGINT (Ctrl-C) and SIGTERM ask the training loop to stop after the current
    step, so that it can write a checkpoint of a consistent state; a second signal stops at once.

    Single-process runs only (``enabled``): the ranks of a distributed run could see the signal at
    different steps and then wait for each other forever; they keep the default handlers.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> GracefulStop:
        if self.enabled:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.received = signum
        log.warning(
            "%s: stopping after this step with a checkpoint (send it again to stop at once)",
            signal.Signals(signum).name,
        )


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process: Ctrl-C reaches the whole
    process group, and a worker that died of it would break the batch the loop is waiting for."""
    for s in GracefulStop.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def load_init_weights(model: SimSiam, path: str) -> None:
    """``run.init_from``: a whole-model ``simsiam.safetensors`` (or a model folder holding one),
    a training checkpoint or an official SimSiam checkpoint."""
    path = Path(path).expanduser()
    state = load_simsiam_state_dict(path / SIMSIAM_FILE if path.is_dir() else path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"run.init_from={path} does not fit this model ({model.arch}, dim {model.dim}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


class KNNMonitor:
    """k-NN top-1 of the encoder's pooled features: train-split bank, held-out queries."""

    def __init__(self, cfg: PretrainConfig, device: torch.device):
        bank, query = knn_datasets(knn_data_config(cfg), cfg.monitor.knn_bank_size, cfg.monitor.knn_query_size)
        if cfg.monitor.knn_k > len(bank):
            raise ConfigError(
                f"monitor.knn_k={cfg.monitor.knn_k} is larger than the k-NN bank ({len(bank)} images): lower it or enlarge monitor.knn_bank_size"
            )
        loader_args = dict(
            batch_size=256, shuffle=False, num_workers=min(cfg.data.num_workers, 4), worker_init_fn=ignore_stop_signals
        )
        self.bank_loader = DataLoader(bank, **loader_args)
        self.query_loader = DataLoader(query, **loader_args)
        self.num_classes = int(max(targets_of(bank).max(), targets_of(query).max())) + 1
        self.cfg, self.device, self.amp_dtype = cfg, device, resolve_amp(cfg.monitor.amp, device)

    def __call__(self, model: SimSiam) -> dict[str, float]:
        features = PooledFeatures(model.encoder)
        args = dict(device=self.device, amp_dtype=self.amp_dtype, channels_last=self.cfg.run.channels_last)
        bank_x, bank_y = extract_features(features, self.bank_loader, **args)
        query_x, query_y = extract_features(features, self.query_loader, **args)
        return knn_accuracy(
            bank_x,
            bank_y,
            query_x,
            query_y,
            num_classes=self.num_classes,
            k=self.cfg.monitor.knn_k,
            temperature=self.cfg.monitor.knn_temperature,
        )


def knn_data_config(cfg: PretrainConfig):
    """The k-NN monitor's data: ``data`` with what ``monitor.knn_data`` sets in its place."""
    knn = {k: v for k, v in dataclasses.asdict(cfg.monitor.knn_data).items() if v is not None}
    return dataclasses.replace(cfg.data, **knn) if knn else cfg.data


def pretrain_views(cfg: PretrainConfig) -> SeededViews:
    """The pretraining data: the train split (``data.train_subset``: a seeded draw), each image's
    two views seeded by (seed, epoch, index). ``data.fast_augment`` computes the same draws'
    pixels faster; ``data.augment_on=device`` has the loader crop only, and
    :func:`views_to_device` finish the batch on the training device."""
    d = cfg.data
    source = build_dataset(d, "train", cache_dir=cfg.run.output_dir)  # folder listings cached in the run folder
    dataset = seeded_subset(source, d.train_subset, seed=cfg.run.seed, what="data.train_subset")
    if d.augment_on == "device":
        make = DeviceTwoCropsTransform
    else:
        make = FastTwoCropsTransform if d.fast_augment else two_crop_augmentation
    return SeededViews(dataset, make(d.image_size, min_scale=d.min_scale, blur_prob=d.blur_prob), cfg.run.seed)


def views_to_device(views: SeededViews, x1, x2, device: torch.device, dtype: torch.dtype = torch.float32):
    """A batch's two views as ``dtype`` tensors on the training device; with
    ``data.augment_on=device`` the jitter, grayscale, blur, flip and normalisation run there
    (:mod:`.device_augment`)."""
    if isinstance(views.transform, DeviceTwoCropsTransform):
        x1, x2 = views.transform.finish([x1, x2], device)
    return x1.to(device, dtype=dtype, non_blocking=True), x2.to(device, dtype=dtype, non_blocking=True)


def _global_mean(value: torch.Tensor, info: DistInfo) -> float:
    if info.distributed:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value.item()


def resume_differences(stored: dict, ours: dict) -> tuple[dict, dict]:
    """``(refused, allowed)``: the config keys that differ between a checkpoint's run and this one,
    split into what changes the recipe and what does not (:data:`RESUMABLE_CHANGES`)."""
    changed = config_differences(stored, ours)
    allowed = {k: v for k, v in changed.items() if k.startswith(RESUMABLE_CHANGES)}
    return {k: v for k, v in changed.items() if k not in allowed}, allowed


def stored_config(ckpt: dict) -> dict:
    """A checkpoint's config with the keys added since it was written at their defaults (which
    are what such runs did: a 3-layer projector, the lr set every step)."""
    try:
        return to_dict(from_dict(PretrainConfig, ckpt.get("config", {})))
    except ConfigError:
        return ckpt.get("config", {})


def _describe_changes(changes: dict) -> str:
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())


@dataclass
class Meters:
    """What the logs report: the epoch's summed loss and steps, the window since the last step
    row (steps, seconds waiting for data), and the last values shown."""

    loss_sum: float = 0.0
    steps: int = 0
    window_start: float = 0.0
    window_steps: int = 0
    window_wait: float = 0.0
    loss: float | None = None
    z_std: float | None = None
    knn_top1: float | None = None

    def start_epoch(self) -> None:
        self.loss_sum, self.steps = 0.0, 0
        self.start_window()

    def start_window(self) -> None:
        self.window_start, self.window_steps, self.window_wait = time.perf_counter(), 0, 0.0

    def add_step(self, loss: float) -> None:
        self.loss = loss
        self.loss_sum += loss
        self.steps += 1
        self.window_steps += 1


class Trainer:
    """Holds the state of one pretraining run; :meth:`run` trains to the end."""

    def __init__(self, cfg: PretrainConfig, *, resume: str | None = "auto", allow_config_change: bool = False):
        self.cfg = cfg
        self.context = context = RunContext.start(
            batch_size=cfg.optim.batch_size, amp=cfg.run.amp, channels_last=cfg.run.channels_last, seed=cfg.run.seed
        )
        self.out = Path(cfg.run.output_dir)
        self.meters = Meters()
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            if torch.cuda.is_available():
                torch.backends.cudnn.benchmark = False
        random.seed(cfg.run.seed)
        self._build_data()  # first: a bad path fails before the model is built
        self._build_model()
        self.step = 0
        self.run_id = uuid.uuid4().hex
        self.resumed_from: Path | None = None
        self.config_changes: dict = {}
        self.bad_images: set[int] = set()
        self.last_metrics: dict = {}
        if resume:
            self._resume(resume, allow_config_change)
        net = context.wrap(self.model)
        self.net = torch.compile(net) if cfg.run.compile else net
        self.knn = KNNMonitor(cfg, context.device) if context.info.is_main and self._knn_enabled() else None

    def _build_data(self) -> None:
        cfg = self.cfg
        self.dataset = pretrain_views(cfg)
        source = base_dataset(self.dataset)
        # what export's model card says of the data: image count and fingerprint, never a local path
        self.data_source = source.describe() if hasattr(source, "describe") else None
        self.steps_per_epoch = len(self.dataset) // cfg.optim.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"the training set has {len(self.dataset)} images, fewer than one batch (optim.batch_size={cfg.optim.batch_size})"
            )
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch
        if cfg.run.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.run.max_steps)
        self.sampler = ResumableSampler(
            self.dataset, num_replicas=self.context.info.world_size, rank=self.context.info.rank, seed=cfg.run.seed
        )

    def _build_model(self) -> None:
        cfg = self.cfg
        model = SimSiam(
            cfg.model.arch,
            cfg.model.dim,
            cfg.model.pred_dim,
            small_stem=cfg.model.small_stem,
            proj_layers=cfg.model.proj_layers,
        )
        if cfg.run.init_from:
            load_init_weights(model, cfg.run.init_from)
        if self.context.info.distributed:
            model = convert_sync_batchnorm(model, self.context.device)
        self.model = self.context.place(model)
        # Inputs follow the parameters' dtype: fp32, or fp64 where a test makes the default fp64.
        self.input_dtype = next(model.parameters()).dtype
        self.optimizer = build_pretrain_optimizer(model, cfg.optim)
        self.scaler = torch.amp.GradScaler(self.context.device.type, enabled=self.context.amp_dtype == torch.float16)

    def _knn_enabled(self) -> bool:
        monitor = self.cfg.monitor
        if monitor.knn_every_epochs == 0 and monitor.knn_every_steps == 0:
            return False
        if monitor.knn_data.dataset is None and not is_labelled(self.dataset):
            log.info(
                "k-NN monitor off: data.dataset=%s has no labels (monitor.knn_data.dataset/root name a labelled set "
                "for it); the collapse monitor (z_std_ratio, z_top_share) stays on",
                self.cfg.data.dataset,
            )
            return False
        return True

    # --- checkpoints -------------------------------------------------------------------
    def _resume(self, resume: str, allow_config_change: bool) -> None:
        if resume == "auto":
            found = find_resume_checkpoint(self.out)
            if found is None:
                return
            path, ckpt = found
        else:
            path, ckpt = Path(resume), load_checkpoint(resume)
        refused, allowed = resume_differences(stored_config(ckpt), to_dict(self.cfg))
        # A folder, list or shards that changed since the checkpoint renumber the images: the same
        # index would be another image, so the resumed run would not be the interrupted one.
        old, new = ckpt.get("data_source"), self.data_source
        if old and new and (old.get("images"), old.get("fingerprint")) != (new.get("images"), new.get("fingerprint")):
            refused["data (images, fingerprint)"] = (
                (old.get("images"), old.get("fingerprint")),
                (new.get("images"), new.get("fingerprint")),
            )
        identity = {k: v for k, v in refused.items() if k in MODEL_IDENTITY}
        if identity:
            raise CheckpointError(
                f"{path} holds a different model: {_describe_changes(identity)} (checkpoint -> this run); use another run.output_dir"
            )
        if refused and not allow_config_change:
            raise CheckpointError(
                f"{path} was trained with other settings: {_describe_changes(refused)} (checkpoint -> this run). Resuming "
                "would mix two recipes in one run: use the checkpoint's settings, another run.output_dir, or "
                "--allow-config-change to continue with the new ones"
            )
        self.config_changes = {**refused, **allowed}
        if refused:
            log.warning(
                "resuming %s with changed settings (--allow-config-change): %s", path, _describe_changes(refused)
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.step = int(ckpt["step"])
        self.run_id = ckpt.get("run_id") or self.run_id
        self.bad_images = set(ckpt.get("bad_images", []))
        self.resumed_from = path
        if self.context.info.is_main:
            log.info("resumed from %s at step %d", path, self.step)

    def save_checkpoint(self) -> Path:
        """Write the current state atomically (rank 0), then delete this run's older checkpoints
        beyond ``run.keep_checkpoints`` (never another run's, an unreadable file or the newest)."""
        path = checkpoint_path(self.out, self.step)
        if self.context.info.is_main:
            save_checkpoint(
                {
                    "library_version": __version__,
                    "run_id": self.run_id,
                    "config": to_dict(self.cfg),
                    "step": self.step,
                    "epoch": self.step / self.steps_per_epoch,
                    "steps_per_epoch": self.steps_per_epoch,
                    "global_batch": self.cfg.optim.batch_size,
                    "world_size": self.context.info.world_size,
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "rng": {"torch": torch.get_rng_state()},
                    "bad_images": sorted(self.bad_images),
                    "data_source": self.data_source,
                    "metrics": self.last_metrics,
                },
                path,
            )
            prune_checkpoints(self.out, self.run_id, self.cfg.run.keep_checkpoints)
        barrier()
        return path

    # --- training ----------------------------------------------------------------------
    def run(self) -> PretrainResult:
        """Train to the end, holding the output folder's lock (one trainer per folder). On SIGINT or
        SIGTERM (single process): finish the step, write a checkpoint, raise :class:`TrainingStopped`."""
        with folder_lock(self.out) if self.context.info.is_main else contextlib.nullcontext():
            with GracefulStop(enabled=not self.context.info.distributed) as self.stop:
                return self._train()

    def _train(self) -> PretrainResult:
        if self.context.info.is_main:
            self._open_logs()
        self.checkpoint = self.resumed_from
        self.net.train()
        stopping = False
        while self.step < self.total_steps and not stopping:
            stopping = self._run_epoch()
        if self.context.info.is_main:
            self.bar.close()
            if self.tb:
                self.tb.close()
        if stopping:
            name = signal.Signals(self.stop.received).name
            raise TrainingStopped(
                f"stopped by {name} at step {self.step} of {self.total_steps} (epoch {self.step / self.steps_per_epoch:.2f}); "
                f"checkpoint {self.checkpoint}: the same command resumes from it",
                self.stop.received,
            )
        checkpoint = self.checkpoint or self.resumed_from  # None: resumed at the end, nothing to do
        return PretrainResult(
            self.out,
            checkpoint,
            self.step,
            self.step / self.steps_per_epoch,
            self.meters.loss,
            self.meters.z_std,
            self.meters.knn_top1,
        )

    def _open_logs(self) -> None:
        """config.yaml (a resume with changed settings adds config_stepN.yaml beside it), the
        CSV logs (rows past a resumed step dropped), TensorBoard and the progress bar."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        text = OmegaConf.to_yaml(to_dict(cfg))
        first = self.out / "config.yaml"
        if not first.is_file() or not self.resumed_from:
            atomic_write_text(text, first)
        elif self.config_changes:
            changed = atomic_write_text(text, self.out / f"config_step{self.step:08d}.yaml")
            log.info(
                "the settings from step %d on are in %s (%s)",
                self.step,
                changed,
                _describe_changes(self.config_changes),
            )
        resume_step = self.step if self.resumed_from else None
        self.step_log = CSVLog(self.out / "train_log.csv", STEP_FIELDS, resume_step)
        self.epoch_log = CSVLog(self.out / "epoch_log.csv", EPOCH_FIELDS, resume_step)
        self.tb = None
        if cfg.run.tensorboard:
            from .errors import import_extra

            SummaryWriter = import_extra(
                "torch.utils.tensorboard", "train", "run.tensorboard=true (set it false to go without)", "tensorboard"
            ).SummaryWriter
            self.tb = SummaryWriter(self.out / "tb", purge_step=resume_step)
        self.bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not cfg.run.progress,
            desc="pretrain",
            unit="step",
            dynamic_ncols=True,
        )

    def _run_epoch(self) -> bool:
        """Train from the current step to the epoch's end (or the run's); returns whether a stop
        signal ended it early."""
        cfg, info = self.cfg, self.context.info
        epoch, done_in_epoch = divmod(self.step, self.steps_per_epoch)
        self.dataset.epoch = epoch
        self.sampler.set_epoch(epoch, skip=done_in_epoch * self.context.local_batch)
        loader = DataLoader(
            self.dataset,
            batch_size=self.context.local_batch,
            sampler=self.sampler,
            num_workers=cfg.data.num_workers,
            drop_last=True,
            pin_memory=self.context.device.type == "cuda",
            persistent_workers=False,
            worker_init_fn=ignore_stop_signals,
        )
        epoch_start, epoch_step0 = time.perf_counter(), self.step
        self.meters.start_epoch()
        fetch_start = time.perf_counter()
        z1 = None
        for (x1, x2), _, bad in loader:
            self.meters.window_wait += time.perf_counter() - fetch_start
            self._count_bad_images(bad)
            lr = set_learning_rate(self.optimizer, cfg.optim, self.step / self.steps_per_epoch)
            z1 = self._step(x1, x2, epoch)
            if info.is_main:
                self.bar.update(1)
                if self.step % cfg.run.log_every_steps == 0 or self.step == self.total_steps:
                    self._log_step(lr, z1)
                at_epoch_end = self.step % self.steps_per_epoch == 0 or self.step == self.total_steps
                every = cfg.monitor.knn_every_steps
                if self.knn and every and self.step % every == 0 and not at_epoch_end:
                    self._knn_log()  # epoch ends log their own k-NN
            if cfg.run.checkpoint_every_steps and self.step % cfg.run.checkpoint_every_steps == 0:
                self.checkpoint = self.save_checkpoint()
            if self.step >= self.total_steps or self.stop.received is not None:
                break
            fetch_start = time.perf_counter()

        stopping = self.stop.received is not None and self.step < self.total_steps
        if stopping and self.step % self.steps_per_epoch:  # no row for a part of an epoch: the resumed run writes it
            if self.checkpoint != checkpoint_path(self.out, self.step):
                self.checkpoint = self.save_checkpoint()
            return True
        if info.is_main and self.meters.steps:
            self._end_epoch(epoch, z1, time.perf_counter() - epoch_start, self.step - epoch_step0)
        barrier()
        if self.checkpoint != checkpoint_path(self.out, self.step):
            self.checkpoint = self.save_checkpoint()
        return stopping

    def _step(self, x1: torch.Tensor, x2: torch.Tensor, epoch: int) -> torch.Tensor:
        """One optimizer step on a batch of view pairs; returns z1 (for the monitors)."""
        cfg = self.cfg
        x1, x2 = views_to_device(self.dataset, x1, x2, self.context.device, self.input_dtype)
        x1, x2 = self.context.images(x1), self.context.images(x2)
        with self.context.autocast():
            p1, p2, z1, z2 = self.net(x1, x2)
        loss = simsiam_loss(p1, p2, z1, z2, stop_gradient=cfg.model.stop_gradient)
        loss_value = _global_mean(loss, self.context.info)
        if not math.isfinite(loss_value):
            last = list_checkpoints(self.out)
            raise NonFiniteLossError(
                f"loss is {loss_value} at step {self.step + 1} (epoch {epoch}); stopped before the update. "
                f"Last good checkpoint: {last[0] if last else 'none yet'}. Lower optim.base_lr or set run.amp=off."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.meters.add_step(loss_value)
        return z1.detach()

    def _count_bad_images(self, bad: torch.Tensor) -> None:
        """Count the unreadable images the loader passed over (the workers logged them by
        name); stop once there are more than ``data.max_bad_images``."""
        found = {int(i) for i in bad.flatten().tolist() if i >= 0}
        if not found - self.bad_images:
            return
        self.bad_images |= found
        limit = self.cfg.data.max_bad_images
        if len(self.bad_images) > limit:
            names = ", ".join(item_name(self.dataset, i) for i in sorted(self.bad_images)[:5])
            raise DatasetError(
                f"{len(self.bad_images)} images could not be read, more than data.max_bad_images={limit} "
                f"(first: {names}): check the dataset, or raise the limit"
            )

    def _log_step(self, lr: float, z1: torch.Tensor) -> None:
        cfg = self.cfg
        self.meters.z_std = std_of_l2_normalized(z1)
        elapsed = time.perf_counter() - self.meters.window_start
        row = {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "loss": self.meters.loss,
            "lr": lr,
            "z_std": self.meters.z_std,
            "z_std_ratio": collapse_ratio(self.meters.z_std, cfg.model.dim),
            "z_top_share": top_direction_share(z1),
            "images_per_s": self.meters.window_steps * cfg.optim.batch_size / elapsed,
            "data_wait_frac": self.meters.window_wait / elapsed,
            "bad_images": len(self.bad_images),
        }
        self.step_log.write(row)
        if self.tb:
            for key in ("loss", "lr", "z_std", "z_std_ratio", "z_top_share", "images_per_s", "data_wait_frac"):
                self.tb.add_scalar(f"train/{key}", row[key], self.step)
        self.bar.set_postfix(
            loss=f"{self.meters.loss:.3f}", z_std=f"{self.meters.z_std:.4f}", img_s=f"{row['images_per_s']:.1f}"
        )
        self.meters.start_window()

    def _end_epoch(self, epoch: int, z1: torch.Tensor, seconds: float, steps: int) -> None:
        """The epoch's row (mean loss, collapse statistics, k-NN when due), the collapse warning
        and the epoch line."""
        cfg = self.cfg
        self.meters.z_std = std_of_l2_normalized(z1)
        ratio = collapse_ratio(self.meters.z_std, cfg.model.dim)
        share = top_direction_share(z1)
        row = {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "loss": self.meters.loss_sum / self.meters.steps,
            "z_std": self.meters.z_std,
            "z_std_ratio": ratio,
            "z_top_share": share,
            "seconds": seconds,
            "images_per_s": steps * cfg.optim.batch_size / seconds,
        }
        every, every_steps = cfg.monitor.knn_every_epochs, cfg.monitor.knn_every_steps
        epoch_end = self.step % self.steps_per_epoch == 0
        knn_due = (
            (epoch_end and every and (epoch + 1) % every == 0)
            or (every_steps and self.step % every_steps == 0)  # a step check that fell on an epoch end
            or self.step == self.total_steps
        )
        if self.knn and knn_due:
            result = self.knn(self.model)
            row["knn_top1"], row["knn_top5"] = result["top1"], result["top5"]
            self.meters.knn_top1 = row["knn_top1"]
        self.epoch_log.write(row)
        if self.tb:
            for key in ("loss", "z_std", "z_std_ratio", "z_top_share", "knn_top1", "knn_top5"):
                if row.get(key) is not None:
                    self.tb.add_scalar(f"epoch/{key}", row[key], self.step)
        if ratio < cfg.monitor.collapse_warn_ratio or share > cfg.monitor.collapse_warn_share:
            log.warning(
                "collapse warning: std of l2-normalised z is %.5f, %.3f x 1/sqrt(%d) (threshold %.2f); "
                "%.3f of it lies on one line (threshold %.2f)",
                self.meters.z_std,
                ratio,
                cfg.model.dim,
                cfg.monitor.collapse_warn_ratio,
                share,
                cfg.monitor.collapse_warn_share,
            )
        knn_text = f" knn_top1={row['knn_top1']:.2f}%" if row.get("knn_top1") is not None else ""
        tqdm.write(
            f"epoch {self.step / self.steps_per_epoch:.2f}: loss={row['loss']:.4f} z_std={self.meters.z_std:.4f} (x{ratio:.2f} of 1/sqrt(d), "
            f"{share:.2f} on one line){knn_text} {row['images_per_s']:.1f} img/s"
        )
        self.last_metrics = {k: v for k, v in row.items() if v is not None}

    def _knn_log(self) -> None:
        result = self.knn(self.model)
        self.epoch_log.write(
            {
                "step": self.step,
                "epoch": self.step / self.steps_per_epoch,
                "knn_top1": result["top1"],
                "knn_top5": result["top5"],
            }
        )
        if self.tb:
            self.tb.add_scalar("epoch/knn_top1", result["top1"], self.step)


def pretrain(cfg: PretrainConfig, *, resume: str | None = "auto", allow_config_change: bool = False) -> PretrainResult:
    """Train SimSiam as ``cfg`` says; ``resume='auto'`` continues from the newest checkpoint
    (refusing one trained with other settings unless ``allow_config_change``)."""
    try:
        return Trainer(cfg, resume=resume, allow_config_change=allow_config_change).run()
    finally:
        cleanup_distributed()
