"""The converged linear probe: multinomial logistic regression on frozen features.

The linear protocol for small and mid-size datasets (CLIP, Radford et al. 2021, Sec. 3.2 and
appendix A.3; DINOv2's ``eval/log_regression.py``): an L2-regularised multinomial logistic
regression fitted to convergence with a full-batch quasi-Newton solver, its regularisation
strength chosen on a validation split of the training set, then refitted on the whole training
set and scored once on the test set. Unlike a fixed SGD/LARS schedule tuned on another dataset
(the reference recipe of :mod:`.lincls`), it cannot stop half-way: what it reports is what a
linear classifier on these features reaches.

The recipe, every step on tensors (CPU or GPU):

1. Features are standardised with the statistics of the data being fitted (per feature mean
   and std; a feature constant there becomes 0).
2. :func:`choose_weight_decay` sees the training set only: a seeded random
   :data:`VAL_FRACTION` of it is held out, a model is fitted on the rest for every value of
   :data:`WEIGHT_DECAYS` (a log grid), and the value with the best held-out top-1 is taken
   (ties: the lower held-out cross-entropy).
3. :func:`fit_logistic` refits on the whole training set with that value (starting from the
   sweep's fit for it), and :func:`linear_probe` scores the test set once with it.

The objective is ``mean cross-entropy + weight_decay / 2 * |W|^2`` (the bias is not
penalised): ``weight_decay`` = 1 / (C * n) for scikit-learn's ``C`` on n samples. The solver is
``torch.optim.LBFGS`` (strong-Wolfe line search, memory :data:`HISTORY_SIZE`), preconditioned
by the features' covariance: it optimises U with W = U (S + weight_decay I)^(-1/2), S the
covariance of the standardised features being fitted (one (D, N) x (N, D) product and an
eigendecomposition per fitted set; with fewer samples than features, an SVD of the features
instead, and U spans only their N directions, where the minimiser lies). That is a change of variables, not of the problem: the
minimiser is the same W, reached in several times fewer steps, since neighbouring features
(pixels, channels) are strongly correlated. The covariance is taken over every row: features
of a randomly initialised ResNet-50 have most of their covariance eigenvalues below 1e-5 of the
largest, and an estimate from a subsample of rows left fits there short of convergence.

Convergence: L-BFGS (in fp32) stops once every entry of the gradient with respect to (U, b)
is at most :data:`GRAD_TOLERANCE`; then Newton steps (conjugate gradients on Hessian-vector
products, preconditioned in the same eigenbasis) go on until the Newton decrement, the
quadratic model's estimate of how far the objective is above its minimum, is at most
:data:`OBJECTIVE_RTOL` of the objective. ``converged`` means that: a gradient test alone passes
far from the minimum where the data are separable (the cross-entropy is nearly flat along the
separating directions; tests/test_probe.py has such features, where L-BFGS alone stopped at up
to 2.4 times the minimum), and one Newton step covers that distance. A fit that
has not converged within :data:`MAX_ITERATIONS` is recorded as such and logged as a warning.

Precision: in the L-BFGS part features and the (N, D) x (D, C) products are fp32 (the cost: two
passes over the features per evaluation), the loss summed in fp64 from those logits. The Newton
part computes the objective and gradient, which decide convergence, in fp64 (on an fp64 copy of
the features, held while it runs) and its Hessian-vector products, which only steer the step,
in fp32.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import SimsiamHubError
from .knn import topk_accuracy

log = logging.getLogger(__name__)

PROTOCOL = "logreg"
PROTOCOL_DESCRIPTION = (
    "multinomial logistic regression on standardised frozen features, full-batch L-BFGS to convergence, "
    "L2 weight chosen on a seeded validation split of the training set, refitted on the whole training set"
)
WEIGHT_DECAYS = tuple(10.0**k for k in range(-6, 2))  # 1e-6 ... 10, one value per decade
VAL_FRACTION = 0.1  # of the training set, held out to choose the weight decay (DINOv2's default)
GRAD_TOLERANCE = 1e-4  # max |gradient| (whitened coordinates) at which L-BFGS hands over to Newton steps
# converged: the objective is within this fraction of its minimum (estimated). On the demo's
# 10,000 x 2,048 features a tighter 1e-6 took several times as long (Newton-CG converges only
# linearly on ill-conditioned, nearly separable features) for a top-1 a few queries in 2,000 apart
# (docs/run_logs/probe_demo_size); fit_logistic and linear_probe take objective_rtol.
OBJECTIVE_RTOL = 1e-4
CG_STOP = 0.1  # conjugate gradients for a Newton step stop once the model's last fall < this x its mean fall,
CG_RTOL = 1e-6  # or at this relative residual (preconditioned norm),
CG_ITERATIONS = 100  # or after this many Hessian-vector products
MAX_ITERATIONS = 1000  # L-BFGS iterations and Newton steps per fit (CLIP's and DINOv2's cap)
SWEEP_PATIENCE = 2  # the sweep stops after this many values in a row below the best held-out top-1
HISTORY_SIZE = 20  # L-BFGS memory


class ProbeError(SimsiamHubError, ValueError):
    """Features or labels the probe cannot fit (shapes, values, too few samples)."""


# --- one fit ---------------------------------------------------------------------------------


@dataclass
class LogisticFit:
    """A fitted probe: ``scores(x)`` gives class logits for raw (unstandardised) features."""

    weight: torch.Tensor  # (C, D), on standardised features
    bias: torch.Tensor  # (C,)
    mean: torch.Tensor  # (D,) the standardisation, from the fitted data
    std: torch.Tensor  # (D,)
    weight_decay: float
    train_loss: float  # mean cross-entropy on the fitted data at the end (without the penalty)
    objective: float  # train_loss + weight_decay / 2 * |W|^2
    grad_max: float  # max |gradient| of the objective at the end, with respect to (weight, bias)
    objective_gap: float  # the estimated objective - its minimum, relative to the objective (Newton decrement)
    iterations: int  # L-BFGS iterations and Newton steps
    objective_rtol: float  # the gap it was fitted to (OBJECTIVE_RTOL unless asked otherwise)
    converged: bool  # objective_gap <= objective_rtol

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_features(x, "x").to(self.weight.device)
        if x.shape[1] != self.weight.shape[1]:
            raise ProbeError(f"expected features of width {self.weight.shape[1]}, found {x.shape[1]}")
        return ((x - self.mean) / self.std) @ self.weight.T + self.bias

    def restandardised(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of this same classifier on features standardised with (mean, std)."""
        return self.weight * (std / self.std), self.bias + self.weight @ ((mean - self.mean) / self.std)


def _objective(x, y, weight, bias, weight_decay):
    """``(objective, cross-entropy)``. The (N, D) x (D, C) product in fp32; the loss from its
    logits summed in fp64, so that the line search can still tell objective values apart near
    the optimum."""
    ce = F.cross_entropy((x @ weight.T + bias).double(), y)
    return ce + 0.5 * weight_decay * weight.double().square().sum(), ce


def pass_seconds_per_million(images: int = 8192, width: int = 2048, repeats: int = 3) -> float:
    """Seconds per million feature values of one pass of the probe's objective and its gradient
    over random features (``images`` x ``width``, 10 classes), the median of ``repeats`` after a
    warm-up. A fit costs some number of such passes over its features, whatever the CPU's
    speed at convolutions: the demo plans its probes in these units."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(images, width, generator=generator)
    y = torch.randint(0, 10, (images,), generator=generator)
    weight = torch.zeros(10, width, requires_grad=True)
    bias = torch.zeros(10, requires_grad=True)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        _objective(x, y, weight, bias, 1e-4)[0].backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2] / (images * width / 1e6)


class _Problem:
    """Standardised features and labels, and the eigenbasis of their covariance (the
    preconditioner); fitted for one weight decay after another."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int):
        self.mean = x.mean(0)
        std = x.std(0)
        # A column is constant when its spread is below its own rounding (not below the other
        # columns' spread: standardisation makes each column's scale irrelevant).
        self.std = torch.where(std > 1e-6 * self.mean.abs(), std, torch.ones_like(std))
        self.x = (x - self.mean) / self.std
        self.y, self.num_classes = y, num_classes
        n, d = self.x.shape
        if n < d:  # the features span at most n directions, and the minimiser lies in their span
            _, singular, vh = torch.linalg.svd(self.x.double(), full_matrices=False)
            spanned = singular > 1e-10 * singular.max().clamp_min(1e-300)
            self.eigenvalues, self.eigenvectors = singular[spanned] ** 2 / n, vh[spanned].T.contiguous()
        else:
            eigenvalues, self.eigenvectors = torch.linalg.eigh((self.x.T @ self.x).double() / n)
            self.eigenvalues = eigenvalues.clamp_min(0)

    def objective(self, weight, bias, weight_decay):
        return _objective(self.x, self.y, weight, bias, weight_decay)

    def starting_point(self, init: LogisticFit | None, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero, or from ``init`` (a fit of the same problem or of a part of it) whichever of its
        two readings scores the lower objective here: the same classifier of the raw features,
        or the same weights on these standardised features. The first is exact for the same
        data; on more data (the refit after the sweep) a feature that was nearly constant in the
        part can make it extreme on the rest (an objective of 11.8 against 0.39 was seen on a
        ResNet-50's features), and the second, or zero, starts far closer."""
        zero = (
            torch.zeros(self.num_classes, self.x.shape[1], dtype=self.x.dtype, device=self.x.device),
            torch.zeros(self.num_classes, dtype=self.x.dtype, device=self.x.device),
        )
        if init is None:
            return zero
        candidates = [init.restandardised(self.mean, self.std), (init.weight, init.bias), zero]
        with torch.no_grad():
            values = [self.objective(w, b, weight_decay)[0].item() for w, b in candidates]
        return candidates[min(range(len(values)), key=lambda i: (not math.isfinite(values[i]), values[i]))]

    def fit(
        self,
        weight_decay: float,
        init: LogisticFit | None,
        tolerance: float,
        max_iterations: int,
        objective_rtol: float,
    ) -> LogisticFit:
        dtype, device = self.x.dtype, self.x.device
        basis = self.eigenvectors.to(device, dtype)
        scale = (self.eigenvalues + weight_decay).rsqrt().to(device, dtype)  # W = (U * scale) @ basis.T
        weight0, bias0 = self.starting_point(init, weight_decay)
        # 1. L-BFGS in fp32 to the gradient tolerance: cheap, and most of the way.
        u = ((weight0 @ basis) / scale).requires_grad_(True)
        b = bias0.clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [u, b],
            lr=1,
            max_iter=max_iterations,
            max_eval=2 * max_iterations,
            tolerance_grad=tolerance,
            history_size=HISTORY_SIZE,
            line_search_fn="strong_wolfe",
        )

        def closure():
            optimizer.zero_grad(set_to_none=False)
            loss, _ = self.objective((u * scale) @ basis.T, b, weight_decay)
            loss.backward()
            return loss

        optimizer.step(closure)
        iterations = optimizer.state[u].get("n_iter", 0)
        with torch.no_grad():
            weight, bias = ((u * scale) @ basis.T).double(), b.detach().double()
        # 2. Newton steps in fp64 until the remaining gap is below objective_rtol of the objective.
        newton = _NewtonPolish(self, weight_decay)
        steps, gap, value, grad_max = newton.run(weight, bias, max_iterations - iterations, objective_rtol)
        if not math.isfinite(value):
            raise ProbeError(
                f"the probe's objective is {value} (weight decay {weight_decay:g}): the features hold extreme values"
            )
        weight, bias = newton.weight.float(), newton.bias.float()
        with torch.no_grad():
            _, ce = self.objective(weight, bias, weight_decay)
        return LogisticFit(
            weight=weight,
            bias=bias,
            mean=self.mean,
            std=self.std,
            weight_decay=weight_decay,
            train_loss=ce.item(),
            objective=value,
            grad_max=grad_max,
            objective_gap=gap,
            iterations=iterations + steps,
            objective_rtol=objective_rtol,
            converged=gap <= objective_rtol,
        )


class _NewtonPolish:
    """Newton's method in fp64 from L-BFGS's end point, with an estimate of what is left.

    Each step solves H d = -g (H, g: the objective's Hessian and gradient in (W, b)) by conjugate
    gradients (preconditioner: :meth:`preconditioner`), then searches along d. The Newton
    decrement -g.d / 2 estimates f - f* (exactly, for the quadratic model); the fit has
    converged once that estimate is at most ``objective_rtol`` of f. Where the data are separable
    the cross-entropy is nearly flat along the separating directions: a gradient test passes
    there far from the optimum, and L-BFGS (in fp32 above all) creeps along them, while one
    Newton step covers the distance.
    """

    def __init__(self, problem: _Problem, weight_decay: float):
        self.x32, self.y = problem.x, problem.y
        self.x = problem.x.double()  # for the objective and gradient; freed with the polish
        # Only the directions in which the features vary: in the others H is wd I, and with fewer
        # samples than features (N < D) this keeps the preconditioner's cost at C x D x N.
        varies = problem.eigenvalues > 1e-10 * problem.eigenvalues.max().clamp_min(1e-30)
        self.basis = problem.eigenvectors[:, varies].to(self.x.device)
        self.eigenvalues = problem.eigenvalues[varies].to(self.x.device)
        self.weight_decay = weight_decay
        self.onehot = F.one_hot(self.y, problem.num_classes).double()

    def value(self, weight, bias) -> tuple[float, torch.Tensor]:
        logits = self.x @ weight.T + bias
        ce = F.cross_entropy(logits, self.y)
        return (ce + 0.5 * self.weight_decay * weight.square().sum()).item(), logits.softmax(1)

    def gradient(self, weight, probs) -> tuple[torch.Tensor, torch.Tensor]:
        g = (probs - self.onehot) / len(self.y)
        return g.T @ self.x + self.weight_decay * weight, g.sum(0)

    def hessian_times(self, probs, v_weight, v_bias) -> tuple[torch.Tensor, torch.Tensor]:
        # fp32 (probs too): only the step's direction depends on it, the objective and
        # gradient that decide convergence are fp64
        dz = self.x32 @ v_weight.T.float() + v_bias.float()
        dg = probs * (dz - (probs * dz).sum(1, keepdim=True)) / len(self.y)
        return (dg.T @ self.x32).double() + self.weight_decay * v_weight, dg.sum(0).double()

    def preconditioner(self, probs) -> None:
        """Class c's block of H as (w_c S + wd I), S the features' covariance and w_c the mean of
        p_c (1 - p_c): its inverse through S's eigenbasis; the bias as a unit-variance feature."""
        weights = (probs * (1 - probs)).mean(0).double().clamp_min(1e-12)
        # the inverse along each varying direction, less 1 / wd (applied to every direction)
        self.inverse_excess = 1 / (weights[:, None] * self.eigenvalues + self.weight_decay) - 1 / self.weight_decay
        self.inverse_bias_curvature = 1 / weights

    def precondition(self, r_weight, r_bias):
        along = ((r_weight @ self.basis) * self.inverse_excess) @ self.basis.T
        return r_weight / self.weight_decay + along, r_bias * self.inverse_bias_curvature

    def solve(self, probs, g_weight, g_bias) -> tuple[torch.Tensor, torch.Tensor]:
        """d with H d = -g, by preconditioned conjugate gradients from 0, truncated once the
        quadratic model's last decrease is below CG_STOP of its average one (Nash and Sofer's
        rule), or at a relative residual of CG_RTOL."""
        dot = lambda a, b: (a[0] * b[0]).sum() + (a[1] * b[1]).sum()  # noqa: E731
        d = (torch.zeros_like(g_weight), torch.zeros_like(g_bias))
        r = (-g_weight, -g_bias)
        z = self.precondition(*r)
        p, rz = z, dot(r, z)
        target, model = (CG_RTOL**2) * rz, 0.0
        for k in range(1, CG_ITERATIONS + 1):
            hp = self.hessian_times(probs, *p)
            alpha = rz / dot(p, hp)
            d = (d[0] + alpha * p[0], d[1] + alpha * p[1])
            r = (r[0] - alpha * hp[0], r[1] - alpha * hp[1])
            z = self.precondition(*r)
            rz_next = dot(r, z)
            # the quadratic model at d: g.d + d.H.d / 2 = g.d / 2 (conjugate gradients from 0)
            previous, model = model, 0.5 * (dot((g_weight, g_bias), d)).item()
            if rz_next <= target or k * (model - previous) >= CG_STOP * model:
                break
            p, rz = (z[0] + rz_next / rz * p[0], z[1] + rz_next / rz * p[1]), rz_next
        return d

    def run(self, weight, bias, max_steps: int, objective_rtol: float) -> tuple[int, float, float, float]:
        """Steps taken, the estimated relative gap, the objective and max |gradient| at the end."""
        self.weight, self.bias = weight, bias
        value, probs = self.value(weight, bias)
        steps, gap = 0, math.inf
        while math.isfinite(value):
            g_weight, g_bias = self.gradient(self.weight, probs)
            self.preconditioner(probs)
            d_weight, d_bias = self.solve(probs.float(), g_weight, g_bias)
            slope = (g_weight * d_weight).sum().item() + (g_bias * d_bias).sum().item()  # -(Newton decrement)^2
            gap = max(-slope / 2, 0.0) / max(abs(value), 1e-300)
            if gap <= objective_rtol or steps >= max_steps:
                break
            t = 1.0
            for _ in range(40):  # backtracking (Armijo) from the full Newton step
                new_value, new_probs = self.value(self.weight + t * d_weight, self.bias + t * d_bias)
                if new_value <= value + 1e-4 * t * slope:
                    break
                t /= 2
            else:
                break  # no decrease along d: rounding has the last word
            self.weight, self.bias = self.weight + t * d_weight, self.bias + t * d_bias
            value, probs, steps = new_value, new_probs, steps + 1
        grad_max = max(g_weight.abs().max().item(), g_bias.abs().max().item())
        return steps, gap, value, grad_max


def _as_features(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        found = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ProbeError(f"{name}: expected a floating-point tensor of shape (N, D), found {found}")
    return x.float()


def _checked(x: torch.Tensor, y: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = _as_features(x, f"{name}_x")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point() or y.shape[0] != x.shape[0]:
        found = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ProbeError(f"{name}_y: expected integer labels of shape ({x.shape[0]},), found {found}")
    if not torch.isfinite(x).all():
        raise ProbeError(
            f"{name}_x: expected finite features, found {int((~torch.isfinite(x)).sum())} NaN or infinite values"
        )
    if len(y) and y.min() < 0:
        raise ProbeError(f"{name}_y: expected labels >= 0, found {int(y.min())}")
    return x, y.long().to(x.device)


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    weight_decay: float,
    *,
    num_classes: int | None = None,
    tolerance: float = GRAD_TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
    objective_rtol: float = OBJECTIVE_RTOL,
    init: LogisticFit | None = None,
) -> LogisticFit:
    """Fit the probe on (x, y) for one ``weight_decay`` (> 0), from zero or from ``init`` (a
    classifier of the same features, e.g. the sweep's fit on part of them: fewer iterations to
    the same optimum); ``objective_rtol``: how close to its minimum the objective must end to
    count as converged. Warns when it did not converge."""
    x, y = _checked(x, y, "train")
    if len(y) < 2:
        raise ProbeError(f"expected at least 2 training samples, found {len(y)}")
    if not weight_decay > 0:
        raise ProbeError(f"weight_decay: expected a positive number, found {weight_decay!r}")
    num_classes = _num_classes(y, num_classes)
    fit = _Problem(x, y, num_classes).fit(weight_decay, init, tolerance, max_iterations, objective_rtol)
    _warn_unconverged([fit], "the probe")
    return fit


def _num_classes(y: torch.Tensor, num_classes: int | None) -> int:
    found = int(y.max()) + 1 if len(y) else 0
    if num_classes is None:
        num_classes = found
    if num_classes < 2 or found > num_classes:
        raise ProbeError(
            f"expected labels of at least 2 classes in 0..num_classes-1, found num_classes={num_classes}, largest label {found - 1}"
        )
    return num_classes


def _warn_unconverged(fits: list[LogisticFit], what: str) -> None:
    bad = [f for f in fits if not f.converged]
    if bad:
        detail = ", ".join(
            f"weight decay {f.weight_decay:g}: {f.objective_gap:.2g} above the minimum after {f.iterations} iterations"
            for f in bad
        )
        log.warning(
            "%s has not converged to an objective within %g of its minimum (%s): its accuracy may be under-fitted",
            what,
            bad[0].objective_rtol,
            detail,
        )


# --- choosing the weight decay (training data only) ------------------------------------------


@dataclass
class WeightDecaySweep:
    """The weight-decay choice: every value tried (from the largest down; see
    :func:`choose_weight_decay` for those left out), its held-out top-1 (percent) and
    cross-entropy, and the one chosen (the best top-1; ties: the lower cross-entropy)."""

    weight_decays: list[float]
    val_top1: list[float]
    val_loss: list[float]
    converged: list[bool]
    chosen: float
    fit_size: int
    val_size: int
    val_fraction: float
    seed: int
    chosen_fit: LogisticFit | None = field(default=None, compare=False, repr=False)  # on the fit part: a starting point


def validation_split(n: int, seed: int, val_fraction: float = VAL_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, val) of a seeded random split of ``n`` training items."""
    if not 0 < val_fraction < 1:
        raise ProbeError(f"val_fraction: expected a number in (0, 1), found {val_fraction!r}")
    n_val = round(n * val_fraction)
    if n_val < 1 or n - n_val < 2:
        raise ProbeError(
            f"the training set has {n} items: too few to hold out {val_fraction:.0%} for choosing the weight decay"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


def choose_weight_decay(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    seed: int = 0,
    num_classes: int | None = None,
    weight_decays=WEIGHT_DECAYS,
    val_fraction: float = VAL_FRACTION,
    tolerance: float = GRAD_TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
    objective_rtol: float = OBJECTIVE_RTOL,
) -> WeightDecaySweep:
    """The weight decay, chosen from ``weight_decays`` on a seeded held-out part of the
    training set. It receives training data only: no test data can take part in the choice.

    Values are fitted from the largest down, each fit starting from the previous solution
    (the same minimiser, fewer iterations); once :data:`SWEEP_PATIENCE` values in a row score
    below the best held-out top-1, the weaker ones (which over-fit more, and converge slowest)
    are not tried. The sweep records the values tried.
    """
    train_x, train_y = _checked(train_x, train_y, "train")
    num_classes = _num_classes(train_y, num_classes)
    grid = sorted({float(w) for w in weight_decays}, reverse=True)
    if not grid or grid[-1] <= 0:
        raise ProbeError(f"weight_decays: expected positive numbers, found {list(weight_decays)!r}")
    fit_idx, val_idx = validation_split(len(train_y), seed, val_fraction)
    fit_idx, val_idx = fit_idx.to(train_x.device), val_idx.to(train_x.device)
    problem = _Problem(train_x[fit_idx], train_y[fit_idx], num_classes)
    val_x, val_y = train_x[val_idx], train_y[val_idx]
    fits, top1, loss = [], [], []
    for weight_decay in grid:
        if len(top1) > SWEEP_PATIENCE and all(a < max(top1) for a in top1[-SWEEP_PATIENCE:]):
            break  # held-out top-1 has fallen for SWEEP_PATIENCE values in a row: weaker ones over-fit more
        fit = problem.fit(weight_decay, fits[-1] if fits else None, tolerance, max_iterations, objective_rtol)
        scores = fit.scores(val_x)
        fits.append(fit)
        top1.append(topk_accuracy(scores.cpu(), val_y.cpu(), ks=(1,))["top1"])
        loss.append(F.cross_entropy(scores, val_y).item())
        log.info(
            "weight decay %g: held-out top-1 %.2f%%, train loss %.4f, %d iterations, %.2g above the minimum",
            weight_decay,
            top1[-1],
            fit.train_loss,
            fit.iterations,
            fit.objective_gap,
        )
    _warn_unconverged(fits, "the weight-decay sweep")
    best = max(range(len(top1)), key=lambda i: (top1[i], -loss[i]))
    if best in (0, len(grid) - 1) and len(grid) > 1:
        log.warning("the chosen weight decay %g is at the edge of the grid %g..%g", grid[best], grid[-1], grid[0])
    tried = grid[: len(top1)]
    return WeightDecaySweep(
        weight_decays=tried,
        val_top1=top1,
        val_loss=loss,
        converged=[f.converged for f in fits],
        chosen=grid[best],
        fit_size=len(fit_idx),
        val_size=len(val_idx),
        val_fraction=val_fraction,
        seed=seed,
        chosen_fit=fits[best],
    )


# --- the protocol ----------------------------------------------------------------------------


@dataclass
class ProbeResult:
    top1: float  # percent, on the test set, once
    top5: float
    weight_decay: float  # the chosen one
    train_loss: float  # mean cross-entropy of the refit on the whole training set
    iterations: int
    grad_max: float
    objective_gap: float  # the refit's estimated distance to the minimum, relative (see LogisticFit)
    converged: bool
    sweep: WeightDecaySweep
    train_size: int
    test_size: int
    num_features: int
    seconds: float
    tolerance: float = GRAD_TOLERANCE
    objective_rtol: float = OBJECTIVE_RTOL
    fit: LogisticFit | None = field(default=None, repr=False)

    def recipe(self) -> dict:
        """What a results file records of the protocol."""
        return {
            "protocol": PROTOCOL,
            "description": PROTOCOL_DESCRIPTION,
            "weight_decay": self.weight_decay,
            "weight_decays_tried": self.sweep.weight_decays,
            "val_fraction": self.sweep.val_fraction,
            "val_top1": self.sweep.val_top1,
            "split_seed": self.sweep.seed,
            "train_loss": self.train_loss,
            "iterations": self.iterations,
            "grad_max": self.grad_max,
            "grad_tolerance": self.tolerance,
            "objective_gap": self.objective_gap,
            "objective_rtol": self.objective_rtol,
            "converged": self.converged,
            "train_size": self.train_size,
            "test_size": self.test_size,
            "num_features": self.num_features,
        }


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    seed: int = 0,
    weight_decays=WEIGHT_DECAYS,
    val_fraction: float = VAL_FRACTION,
    tolerance: float = GRAD_TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
    objective_rtol: float = OBJECTIVE_RTOL,
) -> ProbeResult:
    """Top-1/top-5 (percent) of the converged linear probe: weight decay chosen on the training
    set (:func:`choose_weight_decay`), refitted on all of it, the test set scored once.

    Features (N, D) in any float dtype on any device (the work happens there); labels are
    integers 0..C-1. Deterministic for a ``seed`` (it draws the validation split).
    """
    start = time.perf_counter()
    train_x, train_y = _checked(train_x, train_y, "train")
    test_x, test_y = _checked(test_x, test_y, "test")
    if test_x.shape[1] != train_x.shape[1]:
        raise ProbeError(f"test_x: expected features of width {train_x.shape[1]} (as train_x), found {test_x.shape[1]}")
    num_classes = _num_classes(train_y, None)
    if len(test_y) == 0 or int(test_y.max()) >= num_classes:
        raise ProbeError(
            f"test_y: expected labels in 0..{num_classes - 1} (the training set's classes), found {test_y.unique().tolist()[:10]}"
        )
    sweep = choose_weight_decay(
        train_x,
        train_y,
        seed=seed,
        num_classes=num_classes,
        weight_decays=weight_decays,
        val_fraction=val_fraction,
        tolerance=tolerance,
        max_iterations=max_iterations,
        objective_rtol=objective_rtol,
    )
    fit = fit_logistic(
        train_x,
        train_y,
        sweep.chosen,
        num_classes=num_classes,
        tolerance=tolerance,
        max_iterations=max_iterations,
        objective_rtol=objective_rtol,
        init=sweep.chosen_fit,
    )
    accuracy = topk_accuracy(fit.scores(test_x).cpu(), test_y.cpu())
    return ProbeResult(
        top1=accuracy["top1"],
        top5=accuracy["top5"],
        weight_decay=sweep.chosen,
        train_loss=fit.train_loss,
        iterations=fit.iterations,
        grad_max=fit.grad_max,
        objective_gap=fit.objective_gap,
        converged=fit.converged,
        sweep=sweep,
        train_size=len(train_y),
        test_size=len(test_y),
        num_features=train_x.shape[1],
        seconds=time.perf_counter() - start,
        tolerance=tolerance,
        objective_rtol=objective_rtol,
        fit=fit,
    )


# --- convergence of a classifier trained on a schedule (the reference recipe) -----------------


def still_falling(losses: list[float], lrs: list[float], window_fraction: float = 0.1, ratio: float = 0.1) -> dict:
    """Was a scheduled (SGD/LARS) classifier still learning when its epochs ran out?

    ``losses[e]``: the mean training loss of epoch e; ``lrs[e]``: its learning rate. A cosine
    schedule brings the lr to zero, so the loss flattens at the end whether or not the
    classifier is fitted: the fall is therefore measured per unit of learning rate. Over the
    last ``window_fraction`` of the epochs (at least 2) it is compared with the same over the
    first: a fall above ``ratio`` times the early one means the classifier was still
    descending when the schedule stopped it. Returns train_loss (the last epoch's),
    loss_fall_per_lr_first, loss_fall_per_lr_last and still_falling (None when it cannot tell:
    fewer than 5 epochs, or a loss that did not fall over the first ones).
    """
    epochs = len(losses)
    window = max(2, math.ceil(epochs * window_fraction))
    out = {
        "train_loss": losses[-1] if losses else None,
        "loss_fall_per_lr_first": None,
        "loss_fall_per_lr_last": None,
        "still_falling": None,
    }
    if epochs < 2 * window + 1 or len(lrs) != epochs:
        return out

    def fall_per_lr(first: int, last: int) -> float:  # loss fall from epoch `first` to `last`, per unit of lr spent
        return (losses[first] - losses[last]) / max(sum(lrs[first + 1 : last + 1]), 1e-30)

    early, late = fall_per_lr(0, window), fall_per_lr(epochs - 1 - window, epochs - 1)
    out.update(
        loss_fall_per_lr_first=early,
        loss_fall_per_lr_last=late,
        still_falling=late > ratio * early if early > 0 else None,
    )
    return out
