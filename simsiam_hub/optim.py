"""Optimizers and learning-rate schedules, for pretraining and linear evaluation alike.

- :func:`build_pretrain_optimizer`: SimSiam's momentum SGD, the predictor optionally at a fixed lr.
- :class:`LARC`: the linear evaluation's LARS, as the reference runs it (NVIDIA apex's ``LARC``
  around momentum SGD, facebookresearch/simsiam ``main_lincls.py --lars``).
- :func:`learning_rate` / :func:`set_learning_rate`: both recipes scale the lr linearly with the
  batch (``scaled_lr``) and decay it with a half cosine, as the reference's
  ``adjust_learning_rate``; set once per epoch (the reference, and linear evaluation always) or at
  every step (``optim.lr_schedule``). Linear evaluation shares these functions.
"""

from __future__ import annotations

import math

import torch

__all__ = ["scaled_lr", "LARC", "learning_rate", "set_learning_rate", "build_pretrain_optimizer"]


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule both recipes use: lr = base_lr * batch_size / 256."""
    return base_lr * batch_size / 256


class LARC(torch.optim.SGD):
    """Momentum SGD with LARC's layer-wise adaptive rate in its scaling mode: what
    ``apex.parallel.LARC(torch.optim.SGD(params, lr, momentum=m, weight_decay=wd),
    trust_coefficient=trust, clip=False)`` computes, with apex's ``eps`` of 1e-8.

    At each step, for every parameter ``p`` whose norm and gradient norm are both non-zero, the
    gradient ``g`` becomes ``(g + wd * p) * trust * |p| / (|g| + wd * |p| + eps)`` (in place, as
    apex does); then momentum SGD steps with the group's lr and *no* weight decay of its own (the
    decay is in the scaled gradient). A parameter with ``|p| = 0`` or ``|g| = 0`` keeps its raw
    gradient and gets no weight decay that step. Every parameter is adapted, whatever its shape:
    a zero-initialised bias takes one plain SGD step, then is adapted from its second step on.
    (MoCo v3's LARS, which adapts and decays only parameters with ndim > 1, is another optimizer.)

    The state (momentum buffers) and ``state_dict`` are SGD's; ``clip=True`` is not provided.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.trust_coefficient, self.eps = trust_coefficient, eps

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decays = [group["weight_decay"] for group in self.param_groups]
        for group, wd in zip(self.param_groups, decays):
            for p in group["params"]:
                if p.grad is None:
                    continue
                p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(p.grad)
                if p_norm != 0 and g_norm != 0:
                    rate = self.trust_coefficient * p_norm / (g_norm + p_norm * wd + self.eps)
                    p.grad.add_(p, alpha=wd).mul_(rate)
            group["weight_decay"] = 0.0
        try:
            super().step()
        finally:
            for group, wd in zip(self.param_groups, decays):
                group["weight_decay"] = wd
        return loss


def learning_rate(cfg, epoch: float) -> float:
    """The lr at ``epoch`` (fractional: step / steps per epoch) for an optim config with ``epochs``,
    ``batch_size``, ``base_lr``, ``warmup_epochs`` and, for pretraining, ``lr_schedule``.

    Cosine decay from init_lr = base_lr * batch_size / 256 after an optional linear warm-up.
    ``lr_schedule="epoch"`` (the reference's ``adjust_learning_rate``, called at each epoch's start
    in main_simsiam.py and main_lincls.py) holds the value at the epoch's start,
    init_lr * 0.5 * (1 + cos(pi * floor(epoch) / epochs)), for the whole epoch: the last epoch runs
    at init_lr * 0.5 * (1 + cos(pi * (E - 1) / E)), not 0. ``"step"`` follows the fractional epoch,
    reaching 0 at the end. A config without ``lr_schedule`` (linear evaluation, which sets the lr
    at epoch starts only) is per epoch.
    """
    if getattr(cfg, "lr_schedule", "epoch") == "epoch":
        epoch = math.floor(epoch)
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
    return torch.optim.SGD(
        groups, lr=scaled_lr(cfg.base_lr, cfg.batch_size), momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
