"""The converged linear probe (simsiam_hub.eval.probe): it fits a separable problem perfectly, its
weight decay comes from the held-out part of the training set and never from the test set, it
is deterministic for a seed, it refuses bad input in one line; and the reference recipe's
convergence check on loss curves of known shape."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from simsiam_hub.eval.probe import (
    OBJECTIVE_RTOL,
    WEIGHT_DECAYS,
    ProbeError,
    choose_weight_decay,
    fit_logistic,
    linear_probe,
    still_falling,
    validation_split,
)


def clusters(n_per_class: int, *, classes: int = 4, dim: int = 16, spread: float = 1.0, seed: int = 0):
    """Gaussian clusters around well-separated centres (10 apart on distinct axes), offset and
    scaled per feature so that standardisation has work to do."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(classes, dim)
    centres[torch.arange(classes), torch.arange(classes)] = 10.0
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return x * torch.linspace(0.1, 5.0, dim) + 3.0, y


def noisy_problem(n: int, seed: int):
    """Two classes, 40 features of which 3 carry signal, and labels flipped for a tenth of the
    samples: held-out accuracy differs across weight decays, so the choice is not a formality."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 40, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    flip = torch.rand(n, generator=g) < 0.1
    return x, torch.where(flip, 1 - y, y)


def test_a_separable_problem_is_fitted_perfectly():
    train_x, train_y = clusters(60)
    test_x, test_y = clusters(30, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y, seed=0)
    assert result.top1 == 100.0 and result.top5 == 100.0
    assert result.converged
    assert result.weight_decay in WEIGHT_DECAYS and result.weight_decay == result.sweep.chosen
    assert max(result.sweep.val_top1) == 100.0
    assert (result.train_size, result.test_size, result.num_features) == (240, 120, 16)
    # the refit is fitted to convergence: its training loss is that of the optimum of the objective
    fit = result.fit
    assert fit.converged and fit.objective_gap <= OBJECTIVE_RTOL
    logits = fit.scores(train_x)
    assert F.cross_entropy(logits, train_y).item() == pytest.approx(result.train_loss, rel=1e-3, abs=1e-6)


def test_the_weight_decay_comes_from_the_held_out_training_split_never_the_test_set():
    train_x, train_y = noisy_problem(400, seed=0)
    test_x, test_y = noisy_problem(300, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y, seed=3)
    sweep = result.sweep
    assert len(set(sweep.val_top1)) > 1  # the held-out accuracies differ: there is a choice to make

    # the choice is the best held-out top-1 (ties: the lower held-out loss) ...
    best = max(range(len(sweep.val_top1)), key=lambda i: (sweep.val_top1[i], -sweep.val_loss[i]))
    assert result.weight_decay == sweep.chosen == sweep.weight_decays[best]
    assert sweep.val_top1[best] == max(sweep.val_top1)
    # ... measured on exactly the seeded held-out items of the training set: flip their labels and
    # every held-out score drops below chance (clean, they were all above it)
    fit_idx, val_idx = validation_split(len(train_y), seed=3)
    assert (sweep.fit_size, sweep.val_size) == (len(fit_idx), len(val_idx)) == (360, 40)
    flipped_y = train_y.clone()
    flipped_y[val_idx] = 1 - flipped_y[val_idx]
    flipped = linear_probe(train_x, flipped_y, test_x, test_y, seed=3)
    assert max(flipped.sweep.val_top1) < 50 < min(sweep.val_top1), (flipped.sweep.val_top1, sweep.val_top1)

    # the test set plays no part: scrambled test labels and noise for test features change the
    # test score, never the choice or the sweep
    g = torch.Generator().manual_seed(7)
    scrambled = linear_probe(
        train_x, train_y, torch.randn(300, 40, generator=g), test_y[torch.randperm(300, generator=g)], seed=3
    )
    assert scrambled.sweep == sweep and scrambled.weight_decay == result.weight_decay
    assert scrambled.top1 != result.top1
    # and choose_weight_decay itself receives training data only
    assert choose_weight_decay(train_x, train_y, seed=3) == sweep


def test_deterministic_for_a_seed():
    train_x, train_y = noisy_problem(300, seed=0)
    test_x, test_y = noisy_problem(100, seed=1)
    a = linear_probe(train_x, train_y, test_x, test_y, seed=5)
    b = linear_probe(train_x, train_y, test_x, test_y, seed=5)
    assert (a.top1, a.top5, a.weight_decay, a.train_loss, a.iterations, a.sweep) == (
        b.top1,
        b.top5,
        b.weight_decay,
        b.train_loss,
        b.iterations,
        b.sweep,
    )
    assert torch.equal(a.fit.weight, b.fit.weight) and torch.equal(a.fit.bias, b.fit.bias)
    # another seed draws another held-out split
    assert not torch.equal(validation_split(300, 5)[1], validation_split(300, 6)[1])


def test_a_fit_that_runs_out_of_iterations_says_so(caplog):
    train_x, train_y = noisy_problem(300, seed=0)
    with caplog.at_level("WARNING", logger="simsiam_hub.eval.probe"):
        fit = fit_logistic(train_x, train_y, 1e-4, max_iterations=2)
    assert not fit.converged and 1 <= fit.iterations <= 2 and fit.objective_gap > OBJECTIVE_RTOL
    assert "has not converged" in caplog.text
    full = fit_logistic(train_x, train_y, 1e-4)
    assert full.converged and full.objective < fit.objective


def separable_ill_conditioned(seed: int):
    """Four separable classes in 6 latent dimensions, seen through 24 correlated features
    (the latent mixed, plus 1e-3 noise) whose scales span 1e-4..1e4."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(300) % 4
    latent = (torch.randn(4, 6, generator=g) * 3)[y] + 0.5 * torch.randn(300, 6, generator=g)
    x = latent @ torch.randn(6, 24, generator=g) + 1e-3 * torch.randn(300, 24, generator=g)
    return x * torch.logspace(-4, 4, 24)[torch.randperm(24, generator=g)], y


def minimum_by_float64_lbfgs(x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> float:
    """The objective's minimum by another route: plain L-BFGS on (W, b), float64 throughout,
    no preconditioner, run far past any sensible tolerance."""
    x = x.double()
    x = (x - x.mean(0)) / x.std(0)
    weight = torch.zeros(int(y.max()) + 1, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(int(y.max()) + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=20000, max_eval=40000, tolerance_grad=1e-14, tolerance_change=1e-16,
        history_size=50, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def objective():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + weight_decay / 2 * weight.square().sum()
        loss.backward()
        return loss

    for _ in range(3):  # restarts: L-BFGS creeps along the separating directions
        optimizer.step(objective)
    return objective().item()


def test_fewer_samples_than_features_reach_the_same_minimum():
    """With N < D the solver works in the N directions the features span (the minimiser lies in
    them): the same minimum as the independent solver over all D."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(60) % 3
    x = torch.randn(3, 200, generator=g)[y] + 2 * torch.randn(60, 200, generator=g)
    for weight_decay in (1e-4, 1e-1):
        fit = fit_logistic(x, y, weight_decay)
        minimum = minimum_by_float64_lbfgs(x, y, weight_decay)
        assert fit.converged and (fit.objective - minimum) / minimum <= OBJECTIVE_RTOL, (weight_decay, fit, minimum)


def test_standardisation_makes_a_columns_scale_irrelevant_and_drops_constant_columns():
    """The label is in a column 1e-7 the size of a noise column: standardised like any other, it
    separates the classes; a constant column gets no weight and no NaN."""
    g = torch.Generator().manual_seed(0)
    signal = torch.randn(400, generator=g)
    x = torch.stack([1e-7 * signal, 1e4 * torch.randn(400, generator=g), torch.full((400,), 3.0)], 1)
    y = (signal > 0).long()
    result = linear_probe(x[:300], y[:300], x[300:], y[300:], seed=0)
    assert result.top1 == 100.0 and result.converged
    assert torch.isfinite(result.fit.weight).all() and result.fit.weight[:, 2].abs().max() == 0


@pytest.mark.parametrize("seed", [0, 2])
def test_converged_means_the_objective_is_at_its_minimum_on_separable_ill_conditioned_features(seed):
    """A gradient test passed here up to twice the minimum above it (the cross-entropy is flat
    along separating directions): converged must mean the objective is at its minimum, to the
    default setting and to a tighter one."""
    x, y = separable_ill_conditioned(seed)
    for weight_decay in (1e-6, 1e-4, 1e-2):
        minimum = minimum_by_float64_lbfgs(x, y, weight_decay)
        for rtol in (OBJECTIVE_RTOL, 1e-6):
            fit = fit_logistic(x, y, weight_decay, objective_rtol=rtol)
            assert fit.converged and fit.objective_rtol == rtol, (weight_decay, rtol)
            # the estimate is honest, and what it claims holds against the other solver
            assert fit.objective_gap <= rtol
            assert (fit.objective - minimum) / minimum <= rtol, (weight_decay, rtol, fit.objective, minimum)


def test_a_refit_on_more_data_starts_from_the_better_reading_of_the_part_fit():
    """The sweep fits 90% of the training set and the refit starts from that fit. A feature
    nearly constant in the part (one small value) but large on one sample outside it makes the
    part's classifier extreme there, as a ResNet-50's sparse features did (objective 11.8
    against 0.39): the refit must start no worse than from zero, and reach the same minimum."""
    x, y = clusters(50, dim=8, spread=2.0)
    rare = torch.zeros(len(y))
    rare[0], rare[1] = 1e-3, 10.0  # sample 0 in the part; sample 1, of another class, outside it
    y[0], y[1] = 0, 1
    x = torch.cat([x, rare[:, None]], 1)
    part = torch.arange(len(y)) != 1
    part_fit = fit_logistic(x[part], y[part], 1e-3)
    from_zero = fit_logistic(x, y, 1e-3)
    refit = fit_logistic(x, y, 1e-3, init=part_fit)
    assert refit.converged and from_zero.converged
    assert refit.objective == pytest.approx(from_zero.objective, rel=OBJECTIVE_RTOL)
    assert refit.iterations <= from_zero.iterations, (refit.iterations, from_zero.iterations)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, y: linear_probe(x, y.float(), x, y), "integer labels"),
        (lambda x, y: linear_probe(x[:, :, None], y, x, y), "shape \\(N, D\\)"),
        (lambda x, y: linear_probe(x, y, x[:, :5], y), "width 40"),
        (lambda x, y: linear_probe(x, y, x, y + 5), "labels in 0..1"),
        (lambda x, y: linear_probe(torch.where(x > 2, math.inf, x), y, x, y), "finite"),
        (lambda x, y: linear_probe(x[:3], torch.tensor([0, 1, 0]), x, y), "too few"),
        (lambda x, y: fit_logistic(x, y, 0.0), "positive"),
        (lambda x, y: linear_probe(x, torch.zeros_like(y), x, torch.zeros_like(y)), "at least 2 classes"),
    ],
)
def test_bad_input_is_one_clear_line(call, match):
    x, y = noisy_problem(60, seed=0)
    with pytest.raises(ProbeError, match=match) as info:
        call(x, y)
    assert "\n" not in str(info.value)


# --- the reference recipe's convergence check ------------------------------------------------


def cosine_lrs(epochs: int, lr: float = 1.6) -> list[float]:
    return [lr * 0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(epochs)]


def test_still_falling_reads_the_loss_per_unit_of_learning_rate():
    lrs = cosine_lrs(90)
    spent = [sum(lrs[: e + 1]) for e in range(90)]
    # fitted early: exponential approach to its floor; the tail is flat
    fitted = [0.4 + 1.9 * math.exp(-s / 5) for s in spent]
    # under-fitted: still descending at a steady rate per unit of lr when the schedule ends
    under = [2.3 - 0.006 * s for s in spent]
    done, not_done = still_falling(fitted, lrs), still_falling(under, lrs)
    assert done["still_falling"] is False and done["train_loss"] == fitted[-1]
    assert not_done["still_falling"] is True and not_done["train_loss"] == under[-1]
    assert not_done["loss_fall_per_lr_last"] == pytest.approx(0.006, rel=1e-6)
    # both curves flatten at the end in raw terms (the lr goes to 0): a raw drop could not tell them apart
    assert under[-10] - under[-1] < 0.01 * under[-1]
    assert still_falling(under[:4], lrs[:4])["still_falling"] is None  # too few epochs to tell
    assert still_falling([2.3] * 90, lrs)["still_falling"] is None  # never fell: no early rate to compare with
