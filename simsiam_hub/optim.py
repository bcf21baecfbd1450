"""Optimizers and learning-rate schedules, for pretraining and linear evaluation alike.

Both recipes scale the learning rate linearly with the batch (``config.scaled_lr``) and decay
it with a half cosine, as the reference's ``adjust_learning_rate``; linear evaluation shares
:func:`learning_rate` and calls it once per epoch, as the reference does.
"""

from __future__ import annotations

import math

import torch

from .config import scaled_lr


def learning_rate(cfg, epoch: float) -> float:
    """Cosine decay over ``cfg.epochs`` after an optional linear warm-up; ``epoch`` may be
    fractional. At whole epochs it equals the reference's per-epoch value,
    init_lr * 0.5 * (1 + cos(pi * e / E)). ``cfg``: an optim config (base_lr, batch_size,
    epochs, warmup_epochs)."""
    init_lr = scaled_lr(cfg.base_lr, cfg.batch_size)
    if epoch < cfg.warmup_epochs:
        return init_lr * epoch / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def set_learning_rate(optimizer: torch.optim.Optimizer, cfg, epoch: float) -> float:
    """Set every group's lr for ``epoch``; groups marked ``fix_lr`` keep the initial lr."""
    lr = learning_rate(cfg, epoch)
    init_lr = scaled_lr(cfg.base_lr, cfg.batch_size)
    for group in optimizer.param_groups:
        group["lr"] = init_lr if group.get("fix_lr") else lr
    return lr


def build_pretrain_optimizer(model, cfg) -> torch.optim.SGD:
    """SimSiam's SGD over the trainable parameters; the predictor's group is marked ``fix_lr``
    when ``cfg.fix_pred_lr`` (the reference's ``--fix-pred-lr``)."""
    groups = [
        {"params": [p for p in model.encoder.parameters() if p.requires_grad], "fix_lr": False},
        {"params": [p for p in model.predictor.parameters() if p.requires_grad], "fix_lr": cfg.fix_pred_lr},
    ]
    return torch.optim.SGD(groups, lr=scaled_lr(cfg.base_lr, cfg.batch_size), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
