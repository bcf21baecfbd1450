"""The cosine learning-rate schedule, per epoch (the reference's) and per step, against the
reference's formula written out."""

from __future__ import annotations

import math

import pytest
import torch

from simsiam_hub.config import ConfigError, LinclsOptimConfig, OptimConfig, PretrainConfig, load_config
from simsiam_hub.optim import learning_rate, set_learning_rate


def reference_adjust_learning_rate(init_lr: float, epoch: int, epochs: int) -> float:
    """facebookresearch/simsiam main_simsiam.py (and main_lincls.py) ``adjust_learning_rate``,
    called once at the start of each epoch."""
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


@pytest.mark.parametrize("epochs", [1, 3, 5, 100])
def test_per_epoch_lr_is_the_references_and_constant_within_an_epoch(epochs):
    cfg = OptimConfig(epochs=epochs, batch_size=512, base_lr=0.05, lr_schedule="epoch")  # init lr 0.1
    steps_per_epoch = 7
    for epoch in range(epochs):
        expected = reference_adjust_learning_rate(0.1, epoch, epochs)
        lrs = [learning_rate(cfg, (epoch * steps_per_epoch + i) / steps_per_epoch) for i in range(steps_per_epoch)]
        assert lrs == pytest.approx([expected] * steps_per_epoch, rel=1e-12), epoch
    # The last epoch does not anneal to 0: 1 epoch stays at the initial lr, 3 end at 0.25 of it, 5 at 0.095.
    last = learning_rate(cfg, epochs - 1 / steps_per_epoch) / 0.1
    assert last == pytest.approx({1: 1.0, 3: 0.25, 5: 0.0955, 100: 0.00025}[epochs], abs=5e-4)


def test_per_step_lr_decays_every_step_to_zero():
    cfg = OptimConfig(epochs=3, batch_size=512, base_lr=0.05, lr_schedule="step")
    steps = [i / 7 for i in range(3 * 7 + 1)]
    lrs = [learning_rate(cfg, e) for e in steps]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # strictly decreasing, step after step
    for e, lr in zip(steps, lrs):  # the same cosine, at fractional epochs
        assert lr == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * e / 3)), rel=1e-12, abs=1e-15)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-15)
    for epoch in range(3):  # at epoch starts both schedules agree with the reference
        assert learning_rate(cfg, epoch) == pytest.approx(reference_adjust_learning_rate(0.1, epoch, 3), rel=1e-12)


def test_fix_pred_lr_groups_keep_the_initial_lr_and_lincls_is_per_epoch():
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizer = torch.optim.SGD(
        [{"params": params[:1], "fix_lr": False}, {"params": params[1:], "fix_lr": True}], lr=1.0
    )
    cfg = OptimConfig(epochs=4, batch_size=256, base_lr=0.05, lr_schedule="epoch")
    lr = set_learning_rate(optimizer, cfg, 2.5)
    assert lr == pytest.approx(reference_adjust_learning_rate(0.05, 2, 4))
    assert [g["lr"] for g in optimizer.param_groups] == [lr, 0.05]
    # linear evaluation's config has no lr_schedule: per epoch, as main_lincls.py
    lincls = LinclsOptimConfig(epochs=90, batch_size=4096, base_lr=0.1)
    assert learning_rate(lincls, 10.6) == pytest.approx(reference_adjust_learning_rate(1.6, 10, 90), rel=1e-12)


def test_lr_schedule_is_validated_by_name():
    assert load_config(PretrainConfig).optim.lr_schedule == "step"  # what runs before the option did
    with pytest.raises(ConfigError, match="optim.lr_schedule='cosine' is invalid: expected one of 'epoch', 'step'"):
        load_config(PretrainConfig, None, ["optim.lr_schedule=cosine"])
    with pytest.raises(
        ConfigError, match="optim.warmup_epochs=1.0 is invalid: expected 0 with optim.lr_schedule=epoch"
    ):
        load_config(PretrainConfig, None, ["optim.lr_schedule=epoch", "optim.warmup_epochs=1"])
