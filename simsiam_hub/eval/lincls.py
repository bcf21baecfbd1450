"""Linear evaluation: a linear classifier trained on a frozen backbone (the reference protocol).

Reference: facebookresearch/simsiam ``main_lincls.py``. The backbone is frozen and kept in
eval mode (BatchNorm uses its running statistics, which never change); a new ``fc`` is
initialised normal(0, 0.01) with zero bias and trained with LARS as the reference runs it
(:class:`simsiam_hub.optim.LARC`; no weight decay, momentum 0.9), batch 4096, lr 0.1 * batch / 256, cosine decay per epoch, 90 epochs;
train transform RandomResizedCrop + flip, val Resize + CenterCrop. After every
epoch every backbone tensor is compared with its value at load: a change stops the run.

Two ways to feed the classifier (``data.cache_features``):

- ``false`` (the reference, the default): every training step draws augmented crops and runs
  them through the backbone.
- ``true``: the training images go through the backbone once, with the *val* transform
  (no augmentation), and the classifier trains on those stored features. Because the backbone
  is frozen and in eval mode this is exact for an un-augmented protocol, and an epoch then
  costs a matrix product instead of a pass of the network: what makes a CPU run possible.
  It is a different protocol from the reference (no train-time augmentation), and results
  record which one was used.

The val features are computed once in both cases: the val transform is deterministic and the
backbone frozen, so re-running the network every epoch would give the same numbers.

Two protocols (``protocol``): ``reference`` is the recipe above. ``logreg`` (the small-data
configs' default) fits the probe of :mod:`.probe` on the cached features instead: logistic
regression to convergence with its weight decay chosen on a held-out part of the training
set. The reference recipe is tuned for ImageNet's 28k steps and can stop far from the optimum
on a small set; both protocols record their final training loss, and the reference also
whether it was still falling when its schedule ended (a warning says so).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .. import __version__
from ..checkpoint import load_tagged
from ..config import ConfigError, LinclsConfig, LinclsOptimConfig, to_dict
from ..data.augment import eval_transform, linear_train_transform
from ..data.datasets import (
    SeededViews,
    build_dataset,
    count_bad_images,
    readable,
    seeded_subset,
    targets_of,
)
from ..distributed import ResumableSampler, barrier, cleanup_distributed
from ..errors import SimsiamHubError
from ..fileio import atomic_torch_save, main_process_folder_lock
from ..hub.results import EvalResult, write_results
from ..monitor import CSVLog
from ..optim import LARC, scaled_lr, set_learning_rate
from ..precision import precision_name
from ..run_context import RunContext
from .knn import EVAL_DRAW_SEEDS, eval_loader, extract_features, topk_accuracy
from .probe import ProbeResult, linear_probe, still_falling
from .sources import LoadedSource, backbone_fingerprint, dataset_name, load_source, split_name

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "simsiam-hub/lincls-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.pt"
RESULTS_FILE = "results_lincls.json"
LOG_FIELDS = ["step", "epoch", "lr", "loss", "top1", "top5", "best_top1", "seconds", "images_per_s"]


class BackboneChangedError(SimsiamHubError, RuntimeError):
    """A backbone tensor changed during linear evaluation: the protocol was broken."""


class LinclsCheckpointError(SimsiamHubError, ValueError):
    """A file that is not a linear-evaluation checkpoint, or one of another run."""


# --- the parts -------------------------------------------------------------------------------


def new_classifier(num_features: int, num_classes: int) -> nn.Linear:
    """The reference's new ``fc``: weights normal(0, 0.01), bias zero."""
    fc = nn.Linear(num_features, num_classes)
    nn.init.normal_(fc.weight, mean=0.0, std=0.01)
    nn.init.zeros_(fc.bias)
    return fc


def build_optimizer(fc: nn.Linear, cfg: LinclsOptimConfig) -> torch.optim.Optimizer:
    """LARS as the reference runs it (:class:`~simsiam_hub.optim.LARC`), or plain momentum SGD
    (``optim.optimizer``)."""
    init_lr = scaled_lr(cfg.base_lr, cfg.batch_size)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(fc.parameters(), lr=init_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return LARC(
        fc.parameters(),
        lr=init_lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        trust_coefficient=cfg.trust_coefficient,
    )


def snapshot_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every tensor of ``module`` (parameters and buffers)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def check_unchanged(module: nn.Module, snapshot: dict[str, torch.Tensor], what: str = "backbone") -> None:
    """Raise :class:`BackboneChangedError` if any tensor of ``module`` differs from ``snapshot``."""
    state = module.state_dict()
    changed = [k for k, v in snapshot.items() if k not in state or not torch.equal(state[k].detach().cpu(), v)]
    changed += [k for k in state if k not in snapshot]
    if changed:
        raise BackboneChangedError(
            f"{len(changed)} {what} tensors changed during linear evaluation (first: {changed[:5]}): "
            "the backbone must stay frozen and in eval mode; these results are void"
        )


@dataclass
class LinclsResult:
    output_dir: Path
    checkpoint: Path | None  # None for the logreg protocol (it fits in one go)
    results_file: Path | None  # None until all epochs are done
    epoch: int
    top1: float | None
    top5: float | None
    best_top1: float | None
    best_top5: float | None
    best_epoch: int | None
    seconds: float
    timings: dict = field(default_factory=dict)
    protocol: str = "reference"
    train_loss: float | None = None  # the classifier's mean training loss at the end
    converged: bool | None = None  # logreg: the solver's test; reference: not still falling (None: cannot tell)
    probe: ProbeResult | None = None  # logreg: the whole result (chosen weight decay, sweep, ...)


class FrozenBackbone:
    """What both protocols share: the data (train and val, seeded subsets, unreadable images
    handled), the frozen backbone with its snapshot and fingerprint, feature extraction, and the
    results' common fields."""

    def __init__(self, cfg: LinclsConfig, source: LoadedSource):
        self.cfg, self.source = cfg, source
        self.context = RunContext.start(
            batch_size=cfg.optim.batch_size, amp=cfg.run.amp, channels_last=cfg.run.channels_last, seed=cfg.run.seed
        )
        info = self.context.info
        self.timings: dict[str, float] = {}
        if cfg.data.cache_features and info.distributed:
            raise ConfigError(
                "data.cache_features=true runs in one process: it is for small sets and CPUs (found WORLD_SIZE > 1)"
            )
        self.out = Path(cfg.run.output_dir)

        # Data first: a bad path fails before any work. Subsets use the k-NN monitor's draws.
        size = cfg.data.image_size
        cached = cfg.data.cache_features
        view = eval_transform(size, dataset=cfg.data.dataset)
        train = seeded_subset(
            build_dataset(cfg.data, "train", view if cached else None),
            cfg.data.train_subset,
            seed=EVAL_DRAW_SEEDS["train"],
        )
        val = seeded_subset(build_dataset(cfg.data, "val", view), cfg.data.val_subset, seed=EVAL_DRAW_SEEDS["val"])
        self.num_classes = int(max(targets_of(train).max(), targets_of(val).max())) + 1
        self.train_size, self.val_size = len(train), len(val)
        # Unreadable images: logged by name, replaced by seeded draws, bounded (as in pretraining).
        self.train_set, val = readable(train), readable(val)
        if not cached:
            self.train_set = SeededViews(
                train, linear_train_transform(size, min_scale=cfg.data.min_scale), cfg.run.seed
            )
            self.sampler = ResumableSampler(
                self.train_set, num_replicas=info.world_size, rank=info.rank, seed=cfg.run.seed
            )
        # Each rank evaluates its own share of val; the counts are summed.
        self.val_set = Subset(val, list(range(info.rank, len(val), info.world_size))) if info.distributed else val

        # The frozen backbone, and what it must stay.
        backbone = source.backbone
        backbone.requires_grad_(False)
        backbone.eval()
        self.snapshot = snapshot_state(backbone)
        self.fingerprint = backbone_fingerprint(backbone)
        self.backbone = self.context.place(backbone)

    # --- features ------------------------------------------------------------------------
    def extract(self, dataset, desc: str):
        start = time.perf_counter()
        loader = eval_loader(
            dataset,
            batch_size=self.cfg.run.eval_batch_size,
            num_workers=self.cfg.data.num_workers,
            device=self.context.device,
        )
        x, y = extract_features(
            self.backbone,
            loader,
            device=self.context.device,
            amp_dtype=self.context.amp_dtype,
            channels_last=self.context.channels_last,
            progress=self.cfg.run.progress and self.context.info.is_main,
            desc=desc,
            normalize=False,
        )
        self.timings[f"{desc} seconds"] = time.perf_counter() - start
        return x.to(self.context.device), y.to(self.context.device)

    def result_fields(self) -> dict:
        cfg = self.cfg
        return dict(
            task="linear",
            dataset=dataset_name(cfg.data, cfg.data.name),
            split=split_name(cfg.data),
            source=self.source.name,
            source_revision=self.source.revision,
        )


class LinearEvaluation(FrozenBackbone):
    """One linear-evaluation run of the reference protocol; :meth:`run` trains to the end (or to
    ``run.stop_after_epochs``)."""

    def __init__(self, cfg: LinclsConfig, source: LoadedSource, *, resume: str | None = "auto"):
        super().__init__(cfg, source)
        size = cfg.data.image_size
        with torch.no_grad():
            num_features = self.backbone(torch.zeros(2, 3, size, size, device=self.context.device)).flatten(1).shape[1]
        self.fc = new_classifier(num_features, self.num_classes).to(self.context.device)
        self.optimizer = build_optimizer(self.fc, cfg.optim)
        self.epoch = 0
        self.step = 0
        self.best: dict = {}
        self.last: dict = {}
        self.history: list[dict] = []  # {epoch, lr, loss} per epoch: the convergence check reads it
        self.resumed_from: Path | None = None
        if resume:
            self._resume(resume)
        self.net = self.context.wrap(self.fc)

    # --- checkpoints ---------------------------------------------------------------------
    def _compatibility(self) -> dict:
        """What a resumed run must share with the run that wrote the checkpoint."""
        d = self.cfg.data
        keys = ("dataset", "image_size", "train_subset", "val_subset", "cache_features", "min_scale")
        compatibility = {
            "optim": to_dict(self.cfg.optim),
            "data": {k: getattr(d, k) for k in keys},
            "seed": self.cfg.run.seed,
        }
        if self.cfg.optim.optimizer == "lars":  # checkpoints of the earlier LARS (weight only) have no such key
            compatibility["lars"] = "apex LARC"
        return compatibility

    def _resume(self, resume: str) -> None:
        path = self.out / CHECKPOINT_FILE if resume == "auto" else Path(resume)
        if resume == "auto" and not path.is_file():
            return
        ckpt = load_lincls_checkpoint(path)
        if ckpt["backbone_sha256"] != self.fingerprint:
            raise LinclsCheckpointError(
                f"{path} was trained on another backbone (sha256 {ckpt['backbone_sha256'][:16]}..., source "
                f"{ckpt.get('source')}); this run evaluates {self.source.name} (sha256 {self.fingerprint[:16]}...). "
                "Use another run.output_dir or --resume none"
            )
        if ckpt["compatibility"] != self._compatibility():
            raise LinclsCheckpointError(
                f"{path} was written with other settings: {ckpt['compatibility']}; this run has {self._compatibility()}. "
                "Use another run.output_dir or --resume none"
            )
        self.fc.load_state_dict(ckpt["fc"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.best, self.last = dict(ckpt["best"]), dict(ckpt["last"])
        self.history = list(ckpt.get("history", []))  # absent from checkpoints written before it
        self.resumed_from = path
        if self.context.info.is_main:
            log.info("resumed from %s after epoch %d", path, self.epoch)

    def save_checkpoint(self) -> Path:
        path = self.out / CHECKPOINT_FILE
        if self.context.info.is_main:
            atomic_torch_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "version": CHECKPOINT_VERSION,
                    "library_version": __version__,
                    "config": to_dict(self.cfg),
                    "compatibility": self._compatibility(),
                    "source": self.source.name,
                    "source_revision": self.source.revision,
                    "backbone_sha256": self.fingerprint,
                    "epoch": self.epoch,
                    "step": self.step,
                    "world_size": self.context.info.world_size,
                    "fc": self.fc.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "best": self.best,
                    "last": self.last,
                    "history": self.history,
                },
                path,
            )
        barrier()
        return path

    def _train_batches(self, epoch: int):
        """(features, labels) batches of one epoch, on the device."""
        if self.cfg.data.cache_features:
            generator = torch.Generator().manual_seed(self.cfg.run.seed * 1_000_003 + epoch)
            order = torch.randperm(self.train_x.shape[0], generator=generator).to(self.context.device)
            for start in range(0, len(order), self.context.local_batch):
                idx = order[start : start + self.context.local_batch]
                yield self.train_x[idx], self.train_y[idx]
            return
        self.train_set.epoch = epoch
        self.sampler.set_epoch(epoch)
        loader = DataLoader(
            self.train_set,
            batch_size=self.context.local_batch,
            sampler=self.sampler,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.context.device.type == "cuda",
            persistent_workers=False,
        )
        bad = set()
        for images, labels, passed_over in loader:  # unreadable images are passed over by SeededViews
            bad |= {int(i) for i in passed_over.flatten().tolist() if i >= 0}
            images = self.context.images(images)
            with torch.no_grad(), self.context.autocast():
                features = self.backbone(images)
            yield features.float().flatten(1), labels.to(self.context.device, non_blocking=True)
        count_bad_images(self.train_set, bad, what=f"linear training, epoch {epoch}")

    def _steps_per_epoch(self) -> int:
        n = self.train_size if self.cfg.data.cache_features else len(self.sampler)
        return math.ceil(n / self.context.local_batch)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """top1/top5 (percent) of the classifier on the whole val set (all ranks)."""
        self.fc.eval()
        logits = torch.cat([self.fc(self.val_x[i : i + 4096]) for i in range(0, self.val_x.shape[0], 4096)])
        acc = topk_accuracy(logits.float().cpu(), self.val_y.cpu())
        if not self.context.info.distributed:
            return acc
        n = self.val_x.shape[0]
        sums = torch.tensor([acc["top1"] * n, acc["top5"] * n, n], dtype=torch.float64, device=self.context.device)
        dist.all_reduce(sums)
        return {"top1": (sums[0] / sums[2]).item(), "top5": (sums[1] / sums[2]).item()}

    # --- training ------------------------------------------------------------------------
    def run(self) -> LinclsResult:
        cfg, info = self.cfg, self.context.info
        run_start = time.perf_counter()
        end_epoch = (
            cfg.optim.epochs if cfg.run.stop_after_epochs is None else min(cfg.optim.epochs, cfg.run.stop_after_epochs)
        )
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            csv_log = CSVLog(self.out / "lincls_log.csv", LOG_FIELDS, self.step if self.resumed_from else None)
        if self.epoch < end_epoch:
            self.val_x, self.val_y = self.extract(self.val_set, "val features")
            if cfg.data.cache_features:
                self.train_x, self.train_y = self.extract(self.train_set, "train features")
            check_unchanged(self.backbone, self.snapshot)
        checkpoint = self.resumed_from
        steps_per_epoch = self._steps_per_epoch()
        bar = tqdm(
            total=(end_epoch - self.epoch) * steps_per_epoch,
            disable=not (cfg.run.progress and info.is_main),
            desc="lincls",
            unit="step",
            dynamic_ncols=True,
        )
        train_start = time.perf_counter()
        while self.epoch < end_epoch:
            row = self._train_epoch(bar)
            checkpoint = self.save_checkpoint()
            if info.is_main:
                csv_log.write(row)
                acc_text = f" top1={row['top1']:.2f}% top5={row['top5']:.2f}%" if "top1" in row else ""
                tqdm.write(
                    f"epoch {self.epoch}/{cfg.optim.epochs}: loss={row['loss']:.4f} lr={row['lr']:.4g}{acc_text} ({row['seconds']:.1f} s)"
                )
        bar.close()
        self.timings["train seconds"] = time.perf_counter() - train_start
        if checkpoint is None:
            checkpoint = self.save_checkpoint()
        results_file = None
        convergence = self.convergence()
        if self.epoch >= cfg.optim.epochs and info.is_main:
            results_file = self.write_results(convergence)
        barrier()
        return LinclsResult(
            output_dir=self.out,
            checkpoint=checkpoint,
            results_file=results_file,
            epoch=self.epoch,
            top1=self.last.get("top1"),
            top5=self.last.get("top5"),
            best_top1=self.best.get("top1"),
            best_top5=self.best.get("top5"),
            best_epoch=self.best.get("epoch"),
            seconds=time.perf_counter() - run_start,
            timings=dict(self.timings),
            train_loss=convergence["train_loss"],
            converged=None if convergence["still_falling"] is None else not convergence["still_falling"],
        )

    def _train_epoch(self, bar) -> dict:
        """One epoch at the epoch's lr (set once, as the reference), the backbone check, and the
        evaluation when due; returns the epoch's log row."""
        cfg, epoch, start = self.cfg, self.epoch, time.perf_counter()
        lr = set_learning_rate(self.optimizer, cfg.optim, epoch)
        self.fc.train()
        loss_sum, seen = 0.0, 0
        for features, labels in self._train_batches(epoch):
            loss = F.cross_entropy(self.net(features), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            loss_sum += loss.item() * labels.shape[0]
            seen += labels.shape[0]
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        if not math.isfinite(loss_sum):
            raise SimsiamHubError(
                f"the linear classifier's loss is {loss_sum} in epoch {epoch + 1}: lower optim.base_lr"
            )
        self.epoch = epoch + 1
        check_unchanged(self.backbone, self.snapshot)
        row = {"step": self.step, "epoch": self.epoch, "lr": lr, "loss": loss_sum / max(seen, 1)}
        self.history.append({"epoch": self.epoch, "lr": lr, "loss": row["loss"]})
        if self.epoch % cfg.run.eval_every_epochs == 0 or self.epoch == cfg.optim.epochs:
            acc = self.evaluate()
            self.last = {"top1": acc["top1"], "top5": acc["top5"], "epoch": self.epoch}
            if not self.best or acc["top1"] > self.best["top1"]:
                self.best = dict(self.last)
            row.update(acc)
        seconds = time.perf_counter() - start
        return dict(
            row,
            best_top1=self.best.get("top1"),
            seconds=seconds,
            images_per_s=seen * self.context.info.world_size / seconds,
        )

    def convergence(self) -> dict:
        """The final training loss and whether it was still falling (:func:`~.probe.still_falling`),
        logged, with a warning when the classifier had not converged."""
        losses, lrs = [h["loss"] for h in self.history], [h["lr"] for h in self.history]
        if len(losses) == self.epoch == self.cfg.optim.epochs:
            result = still_falling(losses, lrs)
        else:  # stopped early, or resumed from a checkpoint written before the history was kept
            result = dict(still_falling([], []), train_loss=losses[-1] if losses else None)
        if self.context.info.is_main and result["train_loss"] is not None:
            log.info("final training loss %.4f after %d epochs", result["train_loss"], self.epoch)
        if self.context.info.is_main and result["still_falling"]:
            log.warning(
                "the linear classifier has not converged: over the last epochs its training loss (%.4f) still fell by "
                "%.3g per unit of learning rate, %.0f%% of its early rate; its accuracy is a lower bound. "
                "The converged probe: --protocol logreg (or protocol=logreg)",
                result["train_loss"],
                result["loss_fall_per_lr_last"],
                100 * result["loss_fall_per_lr_last"] / result["loss_fall_per_lr_first"],
            )
        return result

    def write_results(self, convergence: dict) -> Path:
        """``results_lincls.json``: top1/top5 after the last epoch, and at the best epoch."""
        cfg = self.cfg
        recipe = {
            "protocol": "reference",
            "description": "linear classifier on a frozen backbone in eval mode (simsiam main_lincls)",
            "train_features": (
                "cached: un-augmented (val transform), computed once"
                if cfg.data.cache_features
                else "online: RandomResizedCrop + flip through the backbone every step (the reference)"
            ),
            "epochs": cfg.optim.epochs,
            "batch_size": cfg.optim.batch_size,
            "lr": scaled_lr(cfg.optim.base_lr, cfg.optim.batch_size),
            "optimizer": cfg.optim.optimizer,
            "trust_coefficient": cfg.optim.trust_coefficient if cfg.optim.optimizer == "lars" else None,
            "momentum": cfg.optim.momentum,
            "weight_decay": cfg.optim.weight_decay,
            "schedule": "cosine per epoch",
            "image_size": cfg.data.image_size,
            "precision": precision_name(self.context.amp_dtype),
            "train_size": self.train_size,
            "val_size": self.val_size,
            "backbone_sha256": self.fingerprint,
            **convergence,
        }
        common = self.result_fields()
        results = [
            EvalResult(metric=m, value=self.last[m], recipe=dict(recipe, selection="last epoch"), **common)
            for m in ("top1", "top5")
        ]
        best = dict(
            recipe, selection=f"best val top1 over epochs (epoch {self.best['epoch']}), as the reference's model_best"
        )
        results += [EvalResult(metric=f"{m}_best", value=self.best[m], recipe=best, **common) for m in ("top1", "top5")]
        return write_results(results, self.out / RESULTS_FILE)


def run_logreg(cfg: LinclsConfig, source: LoadedSource) -> LinclsResult:
    """The converged probe on the cached features: its weight decay chosen on a held-out
    part of the training set, refitted on all of it, the val split scored once; writes
    ``results_lincls.json``. One process; nothing to resume."""
    start = time.perf_counter()
    run = FrozenBackbone(cfg, source)
    run.out.mkdir(parents=True, exist_ok=True)
    train_x, train_y = run.extract(run.train_set, "train features")
    val_x, val_y = run.extract(run.val_set, "val features")
    check_unchanged(run.backbone, run.snapshot)
    probe = linear_probe(train_x, train_y, val_x, val_y, seed=cfg.run.seed)
    run.timings["probe seconds"] = probe.seconds
    log.info(
        "logreg probe: weight decay %g (held-out top-1 %s), final training loss %.4f, %s after %d iterations",
        probe.weight_decay,
        ", ".join(f"{w:g}: {a:.2f}" for w, a in zip(probe.sweep.weight_decays, probe.sweep.val_top1)),
        probe.train_loss,
        "converged" if probe.converged else "NOT converged",
        probe.iterations,
    )
    recipe = dict(
        probe.recipe(),
        train_features="cached: un-augmented (val transform), computed once",
        image_size=cfg.data.image_size,
        precision=precision_name(run.context.amp_dtype),
        backbone_sha256=run.fingerprint,
    )
    results = [
        EvalResult(metric=m, value=getattr(probe, m), recipe=recipe, **run.result_fields()) for m in ("top1", "top5")
    ]
    results_file = write_results(results, run.out / RESULTS_FILE)
    return LinclsResult(
        output_dir=run.out,
        checkpoint=None,
        results_file=results_file,
        epoch=0,
        top1=probe.top1,
        top5=probe.top5,
        best_top1=None,
        best_top5=None,
        best_epoch=None,
        seconds=time.perf_counter() - start,
        timings=dict(run.timings),
        protocol="logreg",
        train_loss=probe.train_loss,
        converged=probe.converged,
        probe=probe,
    )


def load_lincls_checkpoint(path: str | Path) -> dict:
    """Read a linear-evaluation checkpoint safely (``weights_only``) and check that it is one."""
    return load_tagged(
        path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, error=LinclsCheckpointError, what="linear-evaluation checkpoint"
    )


def linear_eval(
    cfg: LinclsConfig, source: LoadedSource | str | Path, *, revision: str | None = None, resume: str | None = "auto"
) -> LinclsResult:
    """Linear evaluation of ``source`` (anything ``from_pretrained`` accepts, or a
    :class:`LoadedSource`) as ``cfg`` says (``cfg.protocol``: the reference recipe, or the
    logreg probe); ``resume='auto'`` continues a reference run from ``run.output_dir``."""
    try:
        # One run per folder, as pretraining: two would interleave logs and overwrite checkpoints.
        with main_process_folder_lock(cfg.run.output_dir):
            if not isinstance(source, LoadedSource):
                source = load_source(source, revision)
            if cfg.protocol == "logreg":
                return run_logreg(cfg, source)
            return LinearEvaluation(cfg, source, resume=resume).run()
    finally:
        cleanup_distributed()
