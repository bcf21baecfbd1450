"""SimSiam pretraining: one process, or DDP under torchrun, with resumable checkpoints.

The step is the reference's (two forward passes through one encoder, symmetric loss,
SGD with cosine lr); what this adds is mixed precision, channels_last, SyncBN on any
backend, atomic checkpoints with exact resume, and monitors (loss, lr, collapse std,
k-NN top-1, throughput and data wait) logged to CSV, TensorBoard and a progress bar.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import __version__
from .augment import two_crop_augmentation
from .config import ConfigError, PretrainConfig, to_dict
from .data import build_dataset, seeded_subset, targets_of
from .distributed import (
    DistInfo,
    ResumableSampler,
    barrier,
    cleanup_distributed,
    convert_sync_batchnorm,
    setup_distributed,
)
from .errors import SimsiamHubError
from .evaluate import autocast_context, extract_features, knn_accuracy, knn_datasets
from .fileio import atomic_torch_save, atomic_write_text, folder_lock
from .models import PooledFeatures, SimSiam, simsiam_loss
from .monitor import CSVLog, collapse_ratio, std_of_l2_normalized, top_direction_share
from .optim import set_learning_rate

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "simsiam-hub/pretrain-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_RE = re.compile(r"^checkpoint_step(\d{8})\.pt$")
STEP_FIELDS = ["step", "epoch", "loss", "lr", "z_std", "z_std_ratio", "z_top_share", "images_per_s", "data_wait_frac"]
EPOCH_FIELDS = ["step", "epoch", "loss", "z_std", "z_std_ratio", "z_top_share", "knn_top1", "knn_top5", "images_per_s", "seconds"]


class NonFiniteLossError(SimsiamHubError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingStopped(SimsiamHubError, RuntimeError):
    """The run stopped on SIGINT or SIGTERM after writing a checkpoint; ``exit_code`` is the
    shell's 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class CheckpointError(SimsiamHubError, ValueError):
    """A file that is not a simsiam-hub training checkpoint, or of another model."""


@dataclass
class PretrainResult:
    output_dir: Path
    checkpoint: Path
    step: int
    epoch: float
    loss: float | None
    z_std: float | None
    knn_top1: float | None


def checkpoint_path(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint_step{step:08d}.pt"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Training checkpoints in ``output_dir``, newest (highest step) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)), reverse=True)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a training checkpoint safely (``weights_only``) and check that it is one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, not a zip, ...
        raise CheckpointError(f"{path} is not a readable training checkpoint: {type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a simsiam-hub training checkpoint: expected format={CHECKPOINT_FORMAT!r}, found keys {found}")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt['version']}; this simsiam-hub reads up to {CHECKPOINT_VERSION}")
    return ckpt


def find_resume_checkpoint(output_dir: str | Path) -> tuple[Path, dict] | None:
    """The newest checkpoint in ``output_dir`` that loads; unreadable ones are skipped."""
    for path in list_checkpoints(output_dir):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping %s", err)
    return None


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``run.amp``: auto is bf16 on GPUs and on CPUs with native bf16."""
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # oneDNN also "supports" bf16 on plain AVX-512 by emulation, which made a ResNet-50 step
    # 2.5x slower than fp32 on an AVX-512 CPU without AVX512-BF16 (bench/RESULTS.md).
    native = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return torch.bfloat16 if any(getattr(torch.cpu, name, lambda: False)() for name in native) else None


def build_optimizer(model: SimSiam, cfg) -> torch.optim.SGD:
    """SGD over the trainable parameters; the predictor's group is marked ``fix_lr``."""
    init_lr = cfg.base_lr * cfg.batch_size / 256
    groups = [
        {"params": [p for p in model.encoder.parameters() if p.requires_grad], "fix_lr": False},
        {"params": [p for p in model.predictor.parameters() if p.requires_grad], "fix_lr": cfg.fix_pred_lr},
    ]
    return torch.optim.SGD(groups, lr=init_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class SeededViews(Dataset):
    """Applies the two-crop transform with random state seeded by (seed, epoch, index).

    Each image's views then depend on neither the number of data-loader workers nor the
    number of ranks nor an interruption: a resumed run, a 1-process run and a 2-process
    run all see the same pixels.
    """

    def __init__(self, dataset: Dataset, transform, seed: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        item_seed = (self.seed * 1_000_003 + self.epoch) * 100_000_007 + index
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            random.seed(item_seed)
            try:
                views = self.transform(image)
            finally:
                random.setstate(state)
        return views, label


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

    def __enter__(self) -> "GracefulStop":
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
        log.warning("%s: stopping after this step with a checkpoint (send it again to stop at once)", signal.Signals(signum).name)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process: Ctrl-C reaches the whole
    process group, and a worker that died of it would break the batch the loop is waiting for."""
    for s in GracefulStop.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def load_init_weights(model: SimSiam, path: str) -> None:
    """``run.init_from``: a whole-model ``simsiam.safetensors`` or a training checkpoint."""
    from .weights import load_simsiam_state_dict

    state = load_simsiam_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"run.init_from={path} does not fit this model ({model.arch}, dim {model.dim}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


class KNNMonitor:
    """k-NN top-1 of the encoder's pooled features: train-split bank, held-out queries."""

    def __init__(self, cfg: PretrainConfig, device: torch.device, amp_dtype):
        bank, query = knn_datasets(cfg.data, cfg.monitor.knn_bank_size, cfg.monitor.knn_query_size)
        loader_args = dict(batch_size=256, shuffle=False, num_workers=min(cfg.data.num_workers, 4), worker_init_fn=ignore_stop_signals)
        self.bank_loader = DataLoader(bank, **loader_args)
        self.query_loader = DataLoader(query, **loader_args)
        self.num_classes = int(max(targets_of(bank).max(), targets_of(query).max())) + 1
        self.cfg, self.device, self.amp_dtype = cfg, device, amp_dtype

    def __call__(self, model: SimSiam) -> dict[str, float]:
        features = PooledFeatures(model.encoder)
        args = dict(device=self.device, amp_dtype=self.amp_dtype, channels_last=self.cfg.run.channels_last)
        bank_x, bank_y = extract_features(features, self.bank_loader, **args)
        query_x, query_y = extract_features(features, self.query_loader, **args)
        return knn_accuracy(
            bank_x, bank_y, query_x, query_y,
            num_classes=self.num_classes, k=self.cfg.monitor.knn_k, temperature=self.cfg.monitor.knn_temperature,
        )  # fmt: skip


def _global_mean(value: torch.Tensor, info: DistInfo) -> float:
    if info.distributed:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value.item()


class Trainer:
    """Holds the state of one pretraining run; :meth:`run` trains to the end."""

    def __init__(self, cfg: PretrainConfig, *, resume: str | None = "auto"):
        self.cfg = cfg
        self.info = info = setup_distributed()
        if cfg.optim.batch_size % info.world_size:
            raise ConfigError(
                f"optim.batch_size={cfg.optim.batch_size} does not divide over {info.world_size} processes"
            )
        self.local_batch = cfg.optim.batch_size // info.world_size
        self.out = Path(cfg.run.output_dir)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            if torch.cuda.is_available():
                torch.backends.cudnn.benchmark = False
        torch.manual_seed(cfg.run.seed)
        random.seed(cfg.run.seed)
        self.device = info.device
        self.amp_dtype = resolve_amp(cfg.run.amp, self.device)

        # Data first: a bad path fails before the model is built.
        dataset = seeded_subset(build_dataset(cfg.data, "train"), cfg.data.train_subset, seed=cfg.run.seed)
        augmentation = two_crop_augmentation(
            cfg.data.image_size, min_scale=cfg.data.min_scale, blur_prob=cfg.data.blur_prob, fast=cfg.data.fast_augment
        )
        self.dataset = SeededViews(dataset, augmentation, cfg.run.seed)
        self.steps_per_epoch = len(dataset) // cfg.optim.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"the training set has {len(dataset)} images, fewer than one batch (optim.batch_size={cfg.optim.batch_size})")
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch
        if cfg.run.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.run.max_steps)
        self.sampler = ResumableSampler(self.dataset, num_replicas=info.world_size, rank=info.rank, seed=cfg.run.seed)

        model = SimSiam(cfg.model.arch, cfg.model.dim, cfg.model.pred_dim, small_stem=cfg.model.small_stem, proj_layers=cfg.model.proj_layers)
        if cfg.run.init_from:
            load_init_weights(model, cfg.run.init_from)
        if info.distributed:
            model = convert_sync_batchnorm(model, self.device)
        model.to(self.device)
        if cfg.run.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.resumed_from = None
        if resume:
            self._resume(resume)

        net = model
        if info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.net = torch.compile(net) if cfg.run.compile else net
        self.knn = KNNMonitor(cfg, self.device, self.amp_dtype) if info.is_main and self._knn_enabled() else None

    def _knn_enabled(self) -> bool:
        return self.cfg.monitor.knn_every_epochs > 0 or self.cfg.monitor.knn_every_steps > 0

    # --- checkpoints -------------------------------------------------------------------
    def _resume(self, resume: str) -> None:
        if resume == "auto":
            found = find_resume_checkpoint(self.out)
            if found is None:
                return
            path, ckpt = found
        else:
            path, ckpt = Path(resume), load_checkpoint(resume)
        stored = {"proj_layers": 3, **ckpt.get("config", {}).get("model", {})}  # 3: checkpoints from before the option
        ours = to_dict(self.cfg.model)
        if any(stored.get(k) != ours[k] for k in ("arch", "dim", "pred_dim", "small_stem", "proj_layers")):
            raise CheckpointError(f"{path} holds a different model: {stored}, this run configures {ours}")
        if ckpt["global_batch"] != self.cfg.optim.batch_size:
            raise CheckpointError(f"{path} was trained at batch {ckpt['global_batch']}, this run sets optim.batch_size={self.cfg.optim.batch_size}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.step = int(ckpt["step"])
        self.resumed_from = path
        if self.info.is_main:
            log.info("resumed from %s at step %d", path, self.step)

    def save_checkpoint(self) -> Path:
        """Write the current state atomically (rank 0) and prune old checkpoints."""
        path = checkpoint_path(self.out, self.step)
        if self.info.is_main:
            atomic_torch_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "version": CHECKPOINT_VERSION,
                    "library_version": __version__,
                    "config": to_dict(self.cfg),
                    "step": self.step,
                    "epoch": self.step / self.steps_per_epoch,
                    "steps_per_epoch": self.steps_per_epoch,
                    "global_batch": self.cfg.optim.batch_size,
                    "world_size": self.info.world_size,
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "rng": {"torch": torch.get_rng_state()},
                    "metrics": self.last_metrics,
                },
                path,
            )
            for old in list_checkpoints(self.out)[self.cfg.run.keep_checkpoints :]:
                old.unlink(missing_ok=True)
        barrier()
        return path

    # --- training ----------------------------------------------------------------------
    def run(self) -> PretrainResult:
        """Train to the end, holding the output folder's lock (one trainer per folder). On SIGINT or
        SIGTERM (single process): finish the step, write a checkpoint, raise :class:`TrainingStopped`."""
        with folder_lock(self.out) if self.info.is_main else contextlib.nullcontext():
            with GracefulStop(enabled=not self.info.distributed) as self.stop:
                return self._train()

    def _train(self) -> PretrainResult:
        cfg, info = self.cfg, self.info
        self.last_metrics: dict = {}
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            from omegaconf import OmegaConf

            atomic_write_text(OmegaConf.to_yaml(to_dict(cfg)), self.out / "config.yaml")
            resume_step = self.step if self.resumed_from else None
            step_log = CSVLog(self.out / "train_log.csv", STEP_FIELDS, resume_step)
            epoch_log = CSVLog(self.out / "epoch_log.csv", EPOCH_FIELDS, resume_step)
            tb = None
            if cfg.run.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(self.out / "tb", purge_step=self.step if self.resumed_from else None)
            bar = tqdm(total=self.total_steps, initial=self.step, disable=not cfg.run.progress, desc="pretrain", unit="step", dynamic_ncols=True)
        checkpoint = self.resumed_from
        self.net.train()
        loss_value = z_std = knn_top1 = None
        stopping = False
        while self.step < self.total_steps:
            epoch, done_in_epoch = divmod(self.step, self.steps_per_epoch)
            self.dataset.epoch = epoch
            self.sampler.set_epoch(epoch, skip=done_in_epoch * self.local_batch)
            loader = DataLoader(
                self.dataset, batch_size=self.local_batch, sampler=self.sampler, num_workers=cfg.data.num_workers,
                drop_last=True, pin_memory=self.device.type == "cuda", persistent_workers=False,
                worker_init_fn=ignore_stop_signals,
            )  # fmt: skip
            epoch_start, epoch_step0 = time.perf_counter(), self.step
            loss_sum = 0.0
            n_logged = 0
            window_start, wait = time.perf_counter(), 0.0
            fetch_start = time.perf_counter()
            for (x1, x2), _ in loader:
                wait += time.perf_counter() - fetch_start
                lr = set_learning_rate(self.optimizer, cfg.optim, self.step / self.steps_per_epoch)
                x1 = x1.to(self.device, non_blocking=True)
                x2 = x2.to(self.device, non_blocking=True)
                if cfg.run.channels_last:
                    x1 = x1.contiguous(memory_format=torch.channels_last)
                    x2 = x2.contiguous(memory_format=torch.channels_last)
                with autocast_context(self.device, self.amp_dtype):
                    p1, p2, z1, z2 = self.net(x1, x2)
                loss = simsiam_loss(p1, p2, z1, z2, stop_gradient=cfg.model.stop_gradient)
                loss_value = _global_mean(loss, info)
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
                loss_sum += loss_value
                n_logged += 1

                if info.is_main:
                    bar.update(1)
                    if self.step % cfg.run.log_every_steps == 0 or self.step == self.total_steps:
                        z_std = std_of_l2_normalized(z1.detach())
                        elapsed = time.perf_counter() - window_start
                        steps_in_window = (self.step - 1) % cfg.run.log_every_steps + 1
                        row = {
                            "step": self.step, "epoch": self.step / self.steps_per_epoch, "loss": loss_value, "lr": lr,
                            "z_std": z_std, "z_std_ratio": collapse_ratio(z_std, cfg.model.dim),
                            "z_top_share": top_direction_share(z1.detach()),
                            "images_per_s": steps_in_window * cfg.optim.batch_size / elapsed,
                            "data_wait_frac": wait / elapsed,
                        }  # fmt: skip
                        step_log.write(row)
                        if tb:
                            for key in ("loss", "lr", "z_std", "z_std_ratio", "z_top_share", "images_per_s", "data_wait_frac"):
                                tb.add_scalar(f"train/{key}", row[key], self.step)
                        bar.set_postfix(loss=f"{loss_value:.3f}", z_std=f"{z_std:.4f}", img_s=f"{row['images_per_s']:.1f}")
                        window_start, wait = time.perf_counter(), 0.0
                    at_epoch_end = self.step % self.steps_per_epoch == 0 or self.step == self.total_steps
                    if self.knn and cfg.monitor.knn_every_steps and self.step % cfg.monitor.knn_every_steps == 0 and not at_epoch_end:
                        self._knn_log(tb, epoch_log)  # epoch ends log their own k-NN below
                if cfg.run.checkpoint_every_steps and self.step % cfg.run.checkpoint_every_steps == 0:
                    checkpoint = self.save_checkpoint()
                if self.step >= self.total_steps or self.stop.received is not None:
                    break
                fetch_start = time.perf_counter()

            stopping = self.stop.received is not None and self.step < self.total_steps
            if stopping and self.step % self.steps_per_epoch:  # no row for a part of an epoch: the resumed run writes it
                if checkpoint != checkpoint_path(self.out, self.step):
                    checkpoint = self.save_checkpoint()
                break

            epoch_end = self.step % self.steps_per_epoch == 0
            if info.is_main and n_logged:
                z_std = std_of_l2_normalized(z1.detach())
                ratio = collapse_ratio(z_std, cfg.model.dim)
                share = top_direction_share(z1.detach())
                seconds = time.perf_counter() - epoch_start
                row = {
                    "step": self.step, "epoch": self.step / self.steps_per_epoch, "loss": loss_sum / n_logged,
                    "z_std": z_std, "z_std_ratio": ratio, "z_top_share": share, "seconds": seconds,
                    "images_per_s": (self.step - epoch_step0) * cfg.optim.batch_size / seconds,
                }  # fmt: skip
                every, every_steps = cfg.monitor.knn_every_epochs, cfg.monitor.knn_every_steps
                knn_due = (
                    (epoch_end and every and (epoch + 1) % every == 0)
                    or (every_steps and self.step % every_steps == 0)  # a step check that fell on an epoch end
                    or self.step == self.total_steps
                )
                if self.knn and knn_due:
                    row.update(self.knn(self.model))
                    row["knn_top1"], row["knn_top5"] = row.pop("top1"), row.pop("top5")
                    knn_top1 = row["knn_top1"]
                epoch_log.write(row)
                if tb:
                    for key in ("loss", "z_std", "z_std_ratio", "z_top_share", "knn_top1", "knn_top5"):
                        if row.get(key) is not None:
                            tb.add_scalar(f"epoch/{key}", row[key], self.step)
                if ratio < cfg.monitor.collapse_warn_ratio or share > cfg.monitor.collapse_warn_share:
                    log.warning(
                        "collapse warning: std of l2-normalised z is %.5f, %.3f x 1/sqrt(%d) (threshold %.2f); "
                        "%.3f of it lies on one line (threshold %.2f)",
                        z_std, ratio, cfg.model.dim, cfg.monitor.collapse_warn_ratio, share, cfg.monitor.collapse_warn_share,
                    )  # fmt: skip
                knn_text = f" knn_top1={knn_top1:.2f}%" if row.get("knn_top1") is not None else ""
                tqdm.write(
                    f"epoch {self.step / self.steps_per_epoch:.2f}: loss={row['loss']:.4f} z_std={z_std:.4f} (x{ratio:.2f} of 1/sqrt(d), "
                    f"{share:.2f} on one line){knn_text} {row['images_per_s']:.1f} img/s"
                )
                self.last_metrics = {k: v for k, v in row.items() if v is not None}
            barrier()
            if epoch_end or self.step >= self.total_steps:
                if checkpoint is None or checkpoint != checkpoint_path(self.out, self.step):
                    checkpoint = self.save_checkpoint()
            if stopping:
                break
        if info.is_main:
            bar.close()
            if tb:
                tb.close()
        if stopping:
            name = signal.Signals(self.stop.received).name
            raise TrainingStopped(
                f"stopped by {name} at step {self.step} of {self.total_steps} (epoch {self.step / self.steps_per_epoch:.2f}); "
                f"checkpoint {checkpoint}: the same command resumes from it", self.stop.received,
            )  # fmt: skip
        if checkpoint is None:  # nothing to do: resumed at the end
            checkpoint = self.resumed_from
        return PretrainResult(self.out, checkpoint, self.step, self.step / self.steps_per_epoch, loss_value, z_std, knn_top1)

    def _knn_log(self, tb, epoch_log) -> None:
        result = self.knn(self.model)
        epoch_log.write({"step": self.step, "epoch": self.step / self.steps_per_epoch, "knn_top1": result["top1"], "knn_top5": result["top5"]})
        if tb:
            tb.add_scalar("epoch/knn_top1", result["top1"], self.step)


def pretrain(cfg: PretrainConfig, *, resume: str | None = "auto") -> PretrainResult:
    """Train SimSiam as ``cfg`` says; ``resume='auto'`` continues from the newest checkpoint."""
    try:
        return Trainer(cfg, resume=resume).run()
    finally:
        cleanup_distributed()
